"""Engine launchers: each builds its command line and knows how to tell it is ready."""

from __future__ import annotations

from serve.engines.base import Engine, EngineError, free_port
from serve.engines.llamacpp import LlamaCppEngine
from serve.engines.vllm import VllmEngine
from toolkit.core.errors import TuneserveError

__all__ = ["Engine", "EngineError", "LlamaCppEngine", "VllmEngine", "free_port", "pick_engine"]


def pick_engine(path: str, requested: str = "auto") -> str:
    """`auto`: vLLM for a model folder when CUDA and vllm are present, llama.cpp for GGUF."""
    from pathlib import Path

    is_gguf = Path(path).suffix == ".gguf"
    if requested == "llamacpp":
        if not is_gguf:
            raise TuneserveError(
                f"llama.cpp serves GGUF files, and {path} is not one",
                "export it first: `tuneserve export RUN --format gguf`, or use --engine vllm",
            )
        return "llamacpp"
    if requested == "vllm":
        if is_gguf:
            raise TuneserveError(
                f"vLLM serves merged16 model folders, and {path} is a GGUF file",
                "serve the run's merged16/ folder with vLLM, or use --engine llamacpp",
            )
        return "vllm"
    if is_gguf:
        return "llamacpp"
    if VllmEngine.available():
        return "vllm"
    raise TuneserveError(
        f"{path} is a model folder, which needs vLLM and a CUDA GPU, and this machine has not both",
        "serve a GGUF instead (`tuneserve export RUN --format gguf`), or install vllm on a GPU machine",
    )
