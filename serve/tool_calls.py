"""Model text -> OpenAI `tool_calls`, whole or streamed (the gateway parses for llama.cpp).

A call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (toolkit/core/tool_prompt.py).
Text outside the calls stays `content`; a choice with calls ends with `finish_reason:
"tool_calls"`. While streaming, text that may be the start of `<tool_call>` is held back until
the next piece decides, and a call is sent as one `delta.tool_calls` item once it is closed.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from serve.reasoning import _held_suffix
from toolkit.core.tool_prompt import CALL_CLOSE, CALL_OPEN

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|$)", re.DOTALL)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def read_call(text: str) -> dict[str, Any] | None:
    """The OpenAI tool call written in one `<tool_call>` block, or None when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": new_call_id(),
        "type": "function",
        "function": {"name": data["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def split_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content or None, tool calls) of a whole answer; text with a broken call stays text."""
    if CALL_OPEN not in text:
        return text, []
    calls = []
    for match in _BLOCK.finditer(text):
        call = read_call(match.group(1).strip())
        if call is None:
            return text, []
        calls.append(call)
    content = _BLOCK.sub("", text).strip()
    return (content or None), calls


def parse_message(choice: dict[str, Any]) -> dict[str, Any]:
    """A chat choice with the calls in its content moved to `message.tool_calls`."""
    message = choice.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return choice
    content, calls = split_calls(message["content"])
    if not calls:
        return choice
    finish = choice.get("finish_reason")
    return {
        **choice,
        "message": {**message, "content": content, "tool_calls": calls},
        "finish_reason": "tool_calls" if finish in ("stop", None) else finish,
    }


def parse_response(response: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion with every choice's calls parsed."""
    choices = response.get("choices")
    if not isinstance(choices, list):
        return response
    return {
        **response,
        "choices": [parse_message(c) if isinstance(c, dict) else c for c in choices],
    }


@dataclass
class CallStream:
    """One choice's streamed content in, (content, finished calls) out. Whitespace before
    anything else is held: dropped when a call follows, as in a whole answer."""

    _buffer: str = ""
    _inside: bool = False
    _started: bool = False  # some content other than whitespace has been sent
    calls: int = 0

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self._buffer += text
        if not self._started and not self._inside:
            stripped = self._buffer.lstrip()
            if CALL_OPEN.startswith(stripped):
                return "", []  # whitespace, perhaps the start of a call: held
            if stripped.startswith(CALL_OPEN):
                self._buffer = stripped  # a call comes first: its leading whitespace goes
            else:
                self._started = True
        content: list[str] = []
        found: list[dict[str, Any]] = []
        while self._buffer:
            if not self._inside:
                start = self._buffer.find(CALL_OPEN)
                if start < 0:
                    held = _held_suffix(self._buffer, CALL_OPEN)
                    content.append(self._buffer[: len(self._buffer) - held])
                    self._buffer = self._buffer[len(self._buffer) - held :]
                    break
                content.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(CALL_OPEN) :]
                self._inside = True
            end = self._buffer.find(CALL_CLOSE)
            if end < 0:
                break
            found.append(self._take(self._buffer[:end]))
            self._buffer = self._buffer[end + len(CALL_CLOSE) :]
            self._inside = False
        text_out = "".join(content)
        if self.calls or found:  # whitespace between calls is no answer
            text_out = text_out.strip()
        return text_out, found

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """At the end: an unclosed call that is whole JSON counts, anything else is text."""
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            call = read_call(rest.strip())
            if call is not None:
                return "", [self._indexed(call)]
            return CALL_OPEN + rest, []
        return rest, []

    def _take(self, block: str) -> dict[str, Any]:
        call = read_call(block.strip())
        if call is None:  # a broken call cannot be sent as one: it goes out as text
            call = {"text": f"{CALL_OPEN}{block}{CALL_CLOSE}"}
            return call
        return self._indexed(call)

    def _indexed(self, call: dict[str, Any]) -> dict[str, Any]:
        call = {"index": self.calls, **call}
        self.calls += 1
        return call


@dataclass
class ToolChunkParser:
    """Rewrites streamed chat chunks: content holding calls becomes `delta.tool_calls`."""

    _streams: dict[int, CallStream] = field(default_factory=dict)

    def rewrite(self, chunk: dict[str, Any]) -> dict[str, Any]:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk
        return {**chunk, "choices": [self._choice(choice) for choice in choices]}

    def _choice(self, choice: object) -> object:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            return choice
        stream = self._streams.setdefault(choice.get("index", 0), CallStream())
        delta = dict(choice["delta"])
        text = delta.get("content")
        content, calls = stream.feed(text) if isinstance(text, str) else ("", [])
        finish = choice.get("finish_reason")
        if finish is not None:
            more, more_calls = stream.flush()
            content += more
            calls += more_calls
        texts = [call.pop("text") for call in calls if "text" in call]
        content += "".join(texts)
        calls = [call for call in calls if call]
        if isinstance(text, str) or content:
            delta["content"] = content
        if calls:
            delta["tool_calls"] = calls
        out = {**choice, "delta": delta}
        if finish in ("stop", None) and finish is not None and stream.calls:
            out["finish_reason"] = "tool_calls"
        return out
