"""THE table of per-mode sampling defaults (SPEC §5) and the mode resolver.

Export writes generation_config.json, GGUF metadata and the Ollama Modelfile from this table;
the gateway applies it. Nothing else may hard-code these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Mode = Literal["thinking", "chat"]
MODES: tuple[Mode, ...] = get_args(Mode)  # the one spelling of the modes: Mode's


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    min_p: float

    def as_dict(self) -> dict[str, float | int]:
        # flat fields: a copy of __dict__ is asdict() without its deep copy (once per request)
        return dict(self.__dict__)

    def header(self) -> str:
        """The `x-tuneserve-sampling` header value: `temperature=0.6, top_p=0.95, top_k=20, min_p=0`."""
        return ", ".join(f"{key}={value:g}" for key, value in self.as_dict().items())


SAMPLING: dict[Mode, Sampling] = {
    "thinking": Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0),
    "chat": Sampling(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0),
}


def template_knows_thinking(chat_template: str | None) -> bool:
    """True when a chat template reads `enable_thinking`, as Qwen3's does."""
    return bool(chat_template) and "enable_thinking" in chat_template


def default_mode(chat_template: str | None) -> Mode:
    """The server's mode when `--mode` is not given (SPEC §5)."""
    return "thinking" if template_knows_thinking(chat_template) else "chat"


SAMPLING_FIELDS: tuple[str, ...] = ("temperature", "top_p", "top_k", "min_p")
_THINK_TAGS = {"/think": "thinking", "/no_think": "chat"}


def split_alias(model: str) -> tuple[str, Mode | None]:
    """`NAME:thinking` -> (`NAME`, "thinking"); a name without a mode suffix -> (name, None)."""
    name, sep, suffix = model.rpartition(":")
    if sep and suffix in MODES:
        return name, suffix  # type: ignore[return-value]
    return model, None


def _last_user_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # OpenAI content parts
                return " ".join(
                    part.get("text", "")
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
            return ""
    return ""


def _tag_mode(text: str) -> Mode | None:
    """The last `/think` or `/no_think` word in a message wins, as in Qwen3's soft switch."""
    found: Mode | None = None
    for word in text.split():
        if word in _THINK_TAGS:
            found = _THINK_TAGS[word]  # type: ignore[assignment]
    return found


def resolve_mode(body: dict, alias_mode: Mode | None, server_mode: Mode) -> Mode:
    """A request's mode, first match wins (SPEC §5).

    1. `chat_template_kwargs.enable_thinking`; 2. a `/think` or `/no_think` tag in the last
    user message (chat) or the prompt (completions); 3. the `NAME:thinking|chat` alias;
    4. the server's mode.
    """
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("enable_thinking"), bool):
        return "thinking" if kwargs["enable_thinking"] else "chat"
    if "messages" in body:
        text = _last_user_text(body.get("messages"))
    else:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else ""
    tagged = _tag_mode(text)
    if tagged is not None:
        return tagged
    if alias_mode is not None:
        return alias_mode
    return server_mode


def apply_defaults(body: dict, mode: Mode) -> tuple[dict, Sampling]:
    """A copy of `body` with the mode's sampling filled in where the client left it unset.

    Returns the new body and the sampling values actually sent (the client's own win).
    A field sent as JSON null counts as unset.
    """
    defaults = SAMPLING[mode].as_dict()
    out = dict(body)
    sent: dict[str, float | int] = {}
    for key in SAMPLING_FIELDS:
        value = out.get(key)
        if value is None:
            value = defaults[key]
            out[key] = value
        sent[key] = value
    return out, Sampling(**sent)  # type: ignore[arg-type]
