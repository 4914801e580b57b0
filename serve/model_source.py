"""What `tuneserve serve` was asked to serve: `NAME=PATH` models, engines already running at a
URL, and the LoRA adapters that ride on them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import TuneserveError


@dataclass(frozen=True)
class ModelSource:
    """A model to serve: a GGUF file or a merged16 folder, or `url` of an engine already running."""

    name: str
    path: Path | None = None
    url: str | None = None
    engine: str = "auto"  # for `url`: "llamacpp" adds repeat_penalty 1.0; "vllm"/"auto" do not
    knows_thinking: bool | None = None  # for `url`: its template reads enable_thinking
    adapters: tuple[tuple[str, Path], ...] = ()  # LoRA adapters served unmerged (vLLM), by name
    engine_args: tuple[str, ...] = ()  # passed through to the engine's command line
    embeddings: bool = False  # served for /v1/embeddings only (`--embeddings NAME=PATH`)
    ctx: int | None = None  # context per request (`--ctx`); None: the model's trained one

    @property
    def served_names(self) -> list[str]:
        """The model's own name, then its adapters': each is a model clients can ask for."""
        return [self.name, *(name for name, _ in self.adapters)]


def parse_model(argument: str | Path | ModelSource) -> ModelSource:
    """`PATH` or `NAME=PATH`; the name defaults to the file's stem or the folder's name."""
    if isinstance(argument, ModelSource):
        return argument
    text = str(argument)
    name, sep, path_text = text.partition("=")
    if not sep:
        name, path_text = "", text
    path = Path(path_text).expanduser()
    if not path.exists():
        raise TuneserveError(
            f"model {path} does not exist",
            "give a .gguf file or a merged16 model folder, optionally as NAME=PATH",
        )
    if not name:
        name = path.stem if path.is_file() else path.name
    if ":" in name or not name:
        raise TuneserveError(f"model name {name!r} is not usable", "use NAME=PATH without ':'")
    return ModelSource(name=name, path=path.resolve())


def parse_adapter(argument: str) -> tuple[str, Path]:
    """`NAME=PATH` of a PEFT adapter folder (a run's adapter/ or its lora export), or of a GGUF
    LoRA file for llama.cpp."""
    name, sep, path_text = argument.partition("=")
    if not sep or not name or ":" in name:
        raise TuneserveError(
            f"--lora {argument!r} is not NAME=PATH",
            "name the adapter: --lora tuned=models/runs/RUN/adapter",
        )
    path = Path(path_text).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return name, path.resolve()
    if not (path / "adapter_config.json").is_file():
        raise TuneserveError(
            f"--lora {name}: {path} is not a LoRA adapter folder (no adapter_config.json)",
            "give a run's adapter/ folder, e.g. models/runs/RUN/adapter",
        )
    return name, path.resolve()


def _adapter_base(adapter: Path) -> Path | None:
    """The base model folder PEFT recorded in the adapter, when it is a local path."""
    try:
        recorded = json.loads((adapter / "adapter_config.json").read_text())
        return Path(recorded["base_model_name_or_path"]).expanduser().resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def attach_adapters(sources: list[ModelSource], lora: Sequence[str]) -> list[ModelSource]:
    """Each adapter rides on the engine of its base model (vLLM's --lora-modules): the one
    model started here, or, among several, the folder the adapter says it was trained on."""
    started = [i for i, source in enumerate(sources) if source.url is None]
    sources = list(sources)
    for argument in lora:
        name, path = parse_adapter(argument)
        base = _adapter_base(path)
        matches = [i for i in started if len(started) == 1 or sources[i].path == base]
        if len(matches) != 1:
            raise TuneserveError(
                f"--lora {name}: cannot tell which served model is its base "
                f"(it names {base or 'none'})",
                "serve the adapter's base model folder with it, e.g. "
                "tuneserve serve BASE_FOLDER --lora NAME=ADAPTER",
            )
        target = sources[matches[0]]
        sources[matches[0]] = dataclasses.replace(target, adapters=(*target.adapters, (name, path)))
    return sources
