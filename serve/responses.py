"""`POST /v1/responses`, stateless: a Responses request is run as a chat completion.

The request maps onto chat (instructions -> a system message, input items -> messages,
function tools -> chat tools, `text.format` -> `response_format`), so mode defaults, tools
and reasoning behave exactly as on /v1/chat/completions, on every engine. The answer maps
back (response_items.py): reasoning, message and function_call output items; a stream
becomes the Responses events (`response.created` ... `response.completed`) that the SDKs
accumulate. Nothing is stored: `previous_response_id` is refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from serve.protocol import GatewayError, error_response
from serve.response_items import ResponseEvents, chat_to_response, new_id
from serve.streaming import EventStream
from toolkit.core.tool_prompt import text_of

# Fields with the same meaning in both APIs.
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "user", "metadata")
_SAME += ("top_k", "min_p", "seed", "chat_template_kwargs", "top_logprobs")


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request a Responses request amounts to (GatewayError 400 if none)."""
    if body.get("previous_response_id") is not None:
        raise GatewayError(
            400,
            "this server keeps no responses: send the whole conversation in 'input'",
            "previous_response_id",
        )
    if body.get("background"):
        raise GatewayError(400, "background responses are not supported", "background")
    chat: dict[str, Any] = {key: body[key] for key in _SAME if key in body}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise GatewayError(400, "'instructions' must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    messages += input_messages(body.get("input"))
    chat["messages"] = messages
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools") is not None:
        chat["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    text_format = (
        (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    )
    if isinstance(text_format, dict) and text_format.get("type") in ("json_object", "json_schema"):
        chat["response_format"] = _chat_format(text_format)
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def input_messages(items: object) -> list[dict[str, Any]]:
    """Responses `input` (a string, or message / function_call / function_call_output items)
    as chat messages; consecutive calls become one assistant message."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise GatewayError(400, "'input' must be a string or a non-empty array of items", "input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            messages.append(_message(index, item))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or new_id("call"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": output if isinstance(output, str) else text_of(output),
                }
            )
        elif kind == "reasoning":
            continue  # earlier thinking is not sent back to Qwen3-style models either
        else:
            raise GatewayError(
                400, f"input[{index}]: item type {str(kind)[:40]!r} is not supported", "input"
            )
    return messages


def _message(index: int, item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise GatewayError(
            400, f"input[{index}].role must be user, assistant, system or developer", "input"
        )
    content = item.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text", "text"):
                parts.append({"type": "text", "text": part.get("text", "")})
            elif kind == "input_image":
                parts.append({"type": "image_url", "image_url": {"url": part.get("image_url")}})
            else:
                parts.append({"type": str(kind)})  # the model check names what it cannot take
        content = parts
    elif not isinstance(content, str):
        raise GatewayError(
            400, f"input[{index}].content must be text or an array of parts", "input"
        )
    return {"role": "system" if role == "developer" else role, "content": content}


def _chat_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise GatewayError(400, "'tools' must be an array", "tools")
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise GatewayError(
                400, f"tools[{index}]: only function tools are served here, not {kind!r}", "tools"
            )
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: object) -> object:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _chat_format(text_format: dict[str, Any]) -> dict[str, Any]:
    if text_format["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: text_format[k] for k in ("name", "schema", "strict") if k in text_format}
    return {"type": "json_schema", "json_schema": schema}


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _chat_chunks(pieces: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Chat chunks decoded from the gateway's own SSE bytes."""
    buffer = b""
    async for piece in pieces:
        buffer += piece.replace(b"\r\n", b"\n")
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    yield json.loads(line[5:])


async def _events(stream: EventStream, request: dict[str, Any]) -> AsyncIterator[bytes]:
    converter = ResponseEvents(request)
    try:
        for event in converter.start():
            yield _sse(event)
        async for chunk in _chat_chunks(stream.body_iterator):
            if "error" in chunk:  # the engine broke off: the Responses form of a failure
                yield _sse(converter.failed(str(chunk["error"].get("message", ""))))
                return
            for event in converter.feed(chunk):
                yield _sse(event)
        for event in converter.finish_events():
            yield _sse(event)
    finally:  # the chat stream's own clean-up (a replica's in-flight count, the engine)
        await stream.body_iterator.aclose()  # type: ignore[attr-defined]


def _tuneserve_headers(answer: Response) -> dict[str, str]:
    pairs = getattr(answer, "raw_headers", [])
    return {
        k.decode("latin-1"): v.decode("latin-1") for k, v in pairs if k.startswith(b"x-tuneserve-")
    }


async def create_response(body: dict, complete: Callable[[dict], Awaitable[Response]]) -> Response:
    """The `/v1/responses` endpoint: `body` as a chat completion, asked through `complete`
    (the gateway's, key already checked), and its answer in the Responses shape."""
    try:
        chat = responses_to_chat(body)
    except GatewayError as exc:
        return error_response(exc.status, exc.message, exc.param, exc.code)
    answer = await complete(chat)
    if answer.status_code != 200:
        return answer
    headers = _tuneserve_headers(answer)
    if isinstance(answer, EventStream):
        converted = EventStream(_events(answer, body), headers, close=answer.close)
        return converted  # type: ignore[return-value]
    return JSONResponse(chat_to_response(json.loads(answer.body), body), headers=headers)
