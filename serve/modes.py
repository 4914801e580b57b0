"""THE table of per-mode sampling defaults (SPEC §5) and the mode resolver.

Export writes generation_config.json, GGUF metadata and the Ollama Modelfile from this table;
the gateway applies it. Nothing else may hard-code these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Mode = Literal["thinking", "chat"]
MODES: tuple[Mode, ...] = ("thinking", "chat")


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    min_p: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

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
