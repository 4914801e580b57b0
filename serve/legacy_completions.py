"""The legacy `/v1/completions` shape where llama-server departs from it.

llama-server ignores `echo` and writes `logprobs` the chat way (`{"content": [{token, logprob,
top_logprobs}]}`); OpenAI's completions answer with the prompt echoed before the text and
`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`. llama-cpp-python's server
already does both. `echo` with `logprobs` would need the prompt's own log-probabilities, which
llama-server does not give: that is a 400 (serve/protocol.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def legacy_logprobs(logprobs: object, offset: int) -> tuple[Any, int]:
    """(legacy logprobs, the offset after the last token) from chat-shaped ones; anything
    else is returned as it is."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return logprobs, offset
    tokens, token_logprobs, top, offsets = [], [], [], []
    for entry in logprobs["content"]:
        token = entry.get("token", "")
        tokens.append(token)
        token_logprobs.append(entry.get("logprob"))
        top.append(
            {alt.get("token", ""): alt.get("logprob") for alt in entry.get("top_logprobs", [])}
        )
        offsets.append(offset)
        offset += len(token)
    legacy = {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }
    return legacy, offset


@dataclass(frozen=True)
class LegacyShape:
    """How one request's answer is reshaped: the prompt to echo (or None), and where the
    completion starts in prompt + completion (`text_offset` counts from the prompt's start)."""

    echo: str | None
    offset: int

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        """A whole text_completion in the legacy shape."""
        choices = []
        for choice in data.get("choices", []):
            logprobs, _ = legacy_logprobs(choice.get("logprobs"), self.offset)
            text = (self.echo or "") + choice.get("text", "")
            choices.append({**choice, "text": text, "logprobs": logprobs})
        return {**data, "choices": choices}

    def chunks(self) -> LegacyChunks:
        return LegacyChunks(self)


@dataclass
class LegacyChunks:
    """Streamed text_completion chunks in the legacy shape (the echo once per choice)."""

    shape: LegacyShape
    _sent: dict[int, int] = field(default_factory=dict)  # completion characters per choice

    def rewrite(self, chunk: dict[str, Any]) -> dict[str, Any]:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk
        out = []
        for choice in choices:
            if not isinstance(choice, dict):
                out.append(choice)
                continue
            index = choice.get("index", 0)
            prefix = (self.shape.echo or "") if index not in self._sent else ""
            sent = self._sent.get(index, 0)
            logprobs, _ = legacy_logprobs(choice.get("logprobs"), self.shape.offset + sent)
            text = choice.get("text") or ""
            self._sent[index] = sent + len(text)
            out.append({**choice, "text": prefix + text, "logprobs": logprobs})
        return {**chunk, "choices": out}
