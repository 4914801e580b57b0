"""Which training backend runs: unsloth where CUDA and unsloth are present, hf everywhere else."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from toolkit.core.errors import TuneserveError


@dataclass(frozen=True)
class BackendChoice:
    name: str  # "unsloth" or "hf"
    reason: str


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cuda_device_count() -> int | None:
    """CUDA GPUs visible to this process, or None without CUDA (training runs on CPU)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else None


def backend_name(requested: str, nproc: int = 1) -> str:
    """The backend `requested` names, resolving `auto` (without checking an explicit one)."""
    return requested if requested != "auto" else choose_backend(requested, nproc).name


def choose_backend(requested: str, nproc: int = 1) -> BackendChoice:
    """`auto` picks unsloth where it can run; several processes (nproc > 1) need the hf backend."""
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    has_cuda = cuda_available()
    if requested == "hf":
        return BackendChoice("hf", "as asked (train.backend or --backend)")
    if requested == "unsloth":
        if not has_cuda:
            raise TuneserveError(
                "the unsloth backend needs a CUDA GPU and none is visible",
                "use --backend hf (transformers + PEFT + TRL) on this machine",
            )
        if not has_unsloth:
            raise TuneserveError(
                "the unsloth backend needs the unsloth package", "pip install 'tuneserve[unsloth]'"
            )
        return BackendChoice("unsloth", "as asked (train.backend or --backend)")
    if has_cuda and has_unsloth and nproc > 1:
        return BackendChoice("hf", f"{nproc} processes: multi-GPU training runs on hf (DDP)")
    if has_cuda and has_unsloth:
        return BackendChoice("unsloth", "CUDA and unsloth are present")
    missing = "no CUDA GPU" if not has_cuda else "unsloth is not installed"
    return BackendChoice("hf", f"{missing}, so transformers + PEFT + TRL")
