"""`POST /v1/responses`, stateless: a Responses request is run as a chat completion.

The request maps onto chat (instructions -> a system message, input items -> messages,
function tools -> chat tools, `text.format` -> `response_format`), so mode defaults, tools
and reasoning behave exactly as on /v1/chat/completions, on every engine. The answer maps
back: reasoning, message and function_call output items; a stream becomes the Responses
events (`response.created` ... `response.completed`) that the SDKs accumulate. Nothing is
stored: `previous_response_id` and `store: true` are refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve.protocol import GatewayError, error_response
from serve.streaming import EventStream
from serve.tool_prompt import text_of

if TYPE_CHECKING:
    from serve.gateway import Gateway

# Fields with the same meaning in both APIs.
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "user", "metadata")
_SAME += ("top_k", "min_p", "seed", "chat_template_kwargs", "top_logprobs")


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


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
                "id": item.get("call_id") or _id("call"),
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


def _usage(usage: object) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    request: dict[str, Any], response_id: str, status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Response envelope (the request's settings echoed, as OpenAI does)."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": request.get("model"),
        "output": output,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "text": {"format": {"type": "text"}, **text},
        "truncation": "disabled",
        "store": False,
        "metadata": request.get("metadata") or {},
        "usage": None,
    }


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as a Response."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        output.append(reasoning_item(_id("rs"), reasoning))
    if message.get("content"):
        output.append(message_item(_id("msg"), message["content"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            call_item(
                _id("fc"),
                call.get("id") or _id("call"),
                function.get("name", ""),
                function.get("arguments", ""),
            )
        )
    response = response_object(request, _id("resp"), "completed", output)
    if choice.get("finish_reason") == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    response["usage"] = _usage(chat.get("usage"))
    return response


class ResponseEvents:
    """Chat chunks in, Responses stream events out (each a dict with `type`)."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.response_id = _id("resp")
        self.sequence = 0
        self.items: list[dict[str, Any]] = []  # finished output items, in order
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> function_call item
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def start(self) -> list[dict[str, Any]]:
        shell = response_object(self.request, self.response_id, "in_progress", [])
        return [
            self._event("response.created", response=shell),
            self._event("response.in_progress", response=shell),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events += self._text("reasoning", reasoning)
            if delta.get("content"):
                events += self._text("message", delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def finish_events(self) -> list[dict[str, Any]]:
        events = self._close()
        for index in sorted(self.calls):
            events += self._close_call(index)
        response = response_object(self.request, self.response_id, "completed", self.items)
        if self.finish == "length":
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        response["usage"] = self.usage
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return events + [self._event(kind, response=response)]

    def failed(self, message: str) -> dict[str, Any]:
        """The event that ends a stream the engine broke off."""
        response = response_object(self.request, self.response_id, "failed", self.items)
        response["error"] = {"code": "server_error", "message": message}
        return self._event("response.failed", response=response)

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = []
        if self.open is None or self.open["type"] != kind:
            events += self._close()
            item_id = _id("rs" if kind == "reasoning" else "msg")
            self.open = {
                "type": kind,
                "id": item_id,
                "text": "",
                "index": len(self.items) + len(self.calls),
            }
            shell = (
                {**reasoning_item(item_id, ""), "content": [], "status": "in_progress"}
                if kind == "reasoning"
                else {**message_item(item_id, "", "in_progress"), "content": []}
            )
            events.append(
                self._event(
                    "response.output_item.added", output_index=self.open["index"], item=shell
                )
            )
            if kind == "message":
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events.append(self._part("response.content_part.added", part))
        self.open["text"] += text
        delta_kind = (
            "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        )
        extra = {} if kind == "reasoning" else {"logprobs": []}
        events.append(
            self._event(
                delta_kind,
                item_id=self.open["id"],
                output_index=self.open["index"],
                content_index=0,
                delta=text,
                **extra,
            )
        )
        return events

    def _part(self, kind: str, part: dict[str, Any]) -> dict[str, Any]:
        assert self.open is not None
        return self._event(
            kind,
            item_id=self.open["id"],
            output_index=self.open["index"],
            content_index=0,
            part=part,
        )

    def _close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        item_id, index, text = self.open["id"], self.open["index"], self.open["text"]
        if self.open["type"] == "reasoning":
            item = reasoning_item(item_id, text)
            events = [
                self._event(
                    "response.reasoning_text.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                )
            ]
        else:
            item = message_item(item_id, text)
            events = [
                self._event(
                    "response.output_text.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._part("response.content_part.done", item["content"][0]),
            ]
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        self.items.append(item)
        self.open = None
        return events

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            events += self._close()
            item = call_item(
                _id("fc"),
                call.get("id") or _id("call"),
                function.get("name") or "",
                "",
                "in_progress",
            )
            item["output_index"] = len(self.items) + len(self.calls)
            self.calls[index] = item
            shell = {k: v for k, v in item.items() if k != "output_index"}
            events.append(
                self._event(
                    "response.output_item.added", output_index=item["output_index"], item=shell
                )
            )
        arguments = function.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=item["output_index"],
                    delta=arguments,
                )
            )
        return events

    def _close_call(self, index: int) -> list[dict[str, Any]]:
        item = self.calls[index]
        done = {k: v for k, v in item.items() if k != "output_index"}
        done["status"] = "completed"
        self.items.append(done)
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=item["output_index"],
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=item["output_index"], item=done),
        ]


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


async def create_response(gateway: Gateway, request: Request) -> Response:
    """The `/v1/responses` endpoint."""
    body = await gateway.read_request(request)
    if isinstance(body, Response):
        return body
    try:
        chat = responses_to_chat(body)
    except GatewayError as exc:
        return error_response(exc.status, exc.message, exc.param, exc.code)
    answer = await gateway.complete(request, chat, chat=True)
    if answer.status_code != 200:
        return answer
    headers = _tuneserve_headers(answer)
    if isinstance(answer, EventStream):
        converted = EventStream(_events(answer, body), headers, close=answer.close)
        return converted  # type: ignore[return-value]
    return JSONResponse(chat_to_response(json.loads(answer.body), body), headers=headers)
