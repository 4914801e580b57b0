"""Responses API objects built from chat completions: output items, the Response, and the
stream of events a chat stream becomes (in the order the openai SDKs accumulate them)."""

from __future__ import annotations

import time
import uuid
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


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
        output.append(reasoning_item(new_id("rs"), reasoning))
    if message.get("content"):
        output.append(message_item(new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments", ""),
            )
        )
    response = response_object(request, new_id("resp"), "completed", output)
    if choice.get("finish_reason") == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    response["usage"] = _usage(chat.get("usage"))
    return response


class ResponseEvents:
    """Chat chunks in, Responses stream events out (each a dict with `type`)."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.response_id = new_id("resp")
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
            item_id = new_id("rs" if kind == "reasoning" else "msg")
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
                new_id("fc"),
                call.get("id") or new_id("call"),
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
