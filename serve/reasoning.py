"""Split `<think>...</think>` text into reasoning and answer, streaming-safe.

Clients read thinking as `reasoning_content` (older name) or `reasoning` (newer): every chat
response leaving the gateway carries both, whichever engine produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPEN = "<think>"
CLOSE = "</think>"


def _held_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


@dataclass
class ThinkSplitter:
    """Feed text pieces as they arrive; get (reasoning, content) pieces back.

    A think block is recognised at the start of the output (after whitespace), as Qwen3 and
    DeepSeek-R1 emit it; `in_reasoning=True` when the prompt already opened `<think>`,
    `thinking_closed=True` when it already closed one (enable_thinking false): all is content.
    Text that might be the start of a tag is held back until the next piece decides it.
    """

    in_reasoning: bool = False
    thinking_closed: bool = False
    _state: str = field(default="start", init=False)
    _buffer: str = field(default="", init=False)
    opened: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.in_reasoning:
            self._state = "reasoning_start"
            self.opened = True
        elif self.thinking_closed:
            self._state = "content"

    @property
    def settled(self) -> bool:
        """Past any think block with nothing held back: every later piece is content as is."""
        return self._state == "content" and not self._buffer

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning, content = [], []
        while self._buffer:
            before = (self._state, self._buffer)
            self._step(reasoning, content)
            if (self._state, self._buffer) == before:
                break  # waiting for more text
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """What is still held back once the output has ended."""
        rest, self._buffer = self._buffer, ""
        if self._state in ("reasoning", "reasoning_start"):
            return rest, ""
        if self._state == "after_think":
            return "", ""
        return "", rest

    def _step(self, reasoning: list[str], content: list[str]) -> None:
        buffer = self._buffer
        if self._state == "start":
            stripped = buffer.lstrip()
            if stripped.startswith(OPEN):
                self._buffer = stripped[len(OPEN) :]
                self._state = "reasoning_start"
                self.opened = True
            elif not stripped or OPEN.startswith(stripped):
                return
            else:
                self._state = "content"
        elif self._state in ("reasoning_start", "after_think"):
            stripped = buffer.lstrip()
            if stripped:
                self._buffer = stripped
                self._state = "reasoning" if self._state == "reasoning_start" else "content"
            else:
                self._buffer = ""
        elif self._state == "reasoning":
            end = buffer.find(CLOSE)
            if end >= 0:
                reasoning.append(buffer[:end])
                self._buffer = buffer[end + len(CLOSE) :]
                self._state = "after_think"
            else:
                held = _held_suffix(buffer, CLOSE)
                reasoning.append(buffer[: len(buffer) - held])
                self._buffer = buffer[len(buffer) - held :]
        else:  # content: everything after the think block is the answer
            content.append(buffer)
            self._buffer = ""


def split_text(
    text: str, in_reasoning: bool = False, thinking_closed: bool = False
) -> tuple[str | None, str]:
    """(reasoning or None, content) of a whole output."""
    splitter = ThinkSplitter(in_reasoning=in_reasoning, thinking_closed=thinking_closed)
    reasoning, content = splitter.feed(text)
    more_reasoning, more_content = splitter.flush()
    reasoning += more_reasoning
    content += more_content
    return (reasoning if splitter.opened else None), content


def _set_reasoning(target: dict, reasoning: str | None) -> None:
    target["reasoning_content"] = reasoning
    target["reasoning"] = reasoning


def split_message(message: dict, in_reasoning: bool = False, thinking_closed: bool = False) -> dict:
    """A chat `message` with `reasoning_content`, `reasoning` and `content` all set."""
    out = dict(message)
    given = out.get("reasoning") or out.get("reasoning_content")
    if given is not None:  # the engine parsed it already (vLLM --reasoning-parser)
        _set_reasoning(out, given)
        return out
    content = out.get("content")
    if isinstance(content, str):
        reasoning, out["content"] = split_text(content, in_reasoning, thinking_closed)
        _set_reasoning(out, reasoning)
    else:
        _set_reasoning(out, None)
    return out


def split_chat_response(
    response: dict, in_reasoning: bool = False, thinking_closed: bool = False
) -> dict:
    """A whole (non-streaming) chat completion with reasoning split out of every choice."""
    choices = response.get("choices")
    if not isinstance(choices, list):
        return response
    out = dict(response)
    out["choices"] = [
        {**choice, "message": split_message(choice["message"], in_reasoning, thinking_closed)}
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict)
        else choice
        for choice in choices
    ]
    return out


class ChunkSplitter:
    """Rewrites streamed chat chunks: one ThinkSplitter per choice index."""

    def __init__(self, in_reasoning: bool = False, thinking_closed: bool = False) -> None:
        self.in_reasoning = in_reasoning
        self.thinking_closed = thinking_closed
        self._splitters: dict[int, ThinkSplitter] = {}

    def settled(self) -> bool:
        """True once every choice seen is past its think block (see ThinkSplitter.settled)."""
        return bool(self._splitters) and all(s.settled for s in self._splitters.values())

    def rewrite(self, chunk: dict) -> dict:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk
        out = dict(chunk)
        out["choices"] = [self._rewrite_choice(choice) for choice in choices]
        return out

    def _rewrite_choice(self, choice: object) -> object:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            return choice
        delta = dict(choice["delta"])
        given = delta.get("reasoning")
        if given is None:
            given = delta.get("reasoning_content")
        if given is not None:  # already parsed by the engine: mirror the name
            _set_reasoning(delta, given)
            return {**choice, "delta": delta}
        index = choice.get("index", 0)
        splitter = self._splitters.setdefault(
            index, ThinkSplitter(self.in_reasoning, self.thinking_closed)
        )
        text = delta.get("content")
        reasoning, content = splitter.feed(text) if isinstance(text, str) else ("", "")
        if choice.get("finish_reason") is not None:
            more_reasoning, more_content = splitter.flush()
            reasoning += more_reasoning
            content += more_content
        if reasoning:
            _set_reasoning(delta, reasoning)
        if isinstance(text, str) or content:
            delta["content"] = content
        return {**choice, "delta": delta}
