"""`tuneserve doctor`: what this machine can do (GPU, training backends, engines, disk)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
from typing import Any

from toolkit.core.artifacts import models_dir

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "unsloth",
    "bitsandbytes",
    "vllm",
    "llama_cpp",
    "gguf",
    "openai",
)
DISTRIBUTIONS = {"llama_cpp": "llama-cpp-python"}
EXECUTABLES = ("llama-server", "llama-quantize", "vllm", "nvidia-smi")


def package_version(module: str) -> str | None:
    """Installed version of a package, without importing it (imports of torch/vllm are slow)."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def gpu_info() -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"cuda": False, "reason": "torch is not installed"}
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "torch_cuda": torch.version.cuda, "devices": []}
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "bf16": torch.cuda.is_bf16_supported(),
            }
        )
    return {"cuda": True, "torch_cuda": torch.version.cuda, "devices": devices}


def llama_server() -> dict[str, Any]:
    """Which llama.cpp server `tuneserve serve` would run for a GGUF (serve/engines/llamacpp.py)."""
    from serve.engines.llamacpp import native_llama_server

    native = native_llama_server()
    if native:
        return {"native": True, "path": native}
    return {
        "native": False,
        "path": None,
        "why": "no native llama-server on PATH, in $TUNESERVE_LLAMA_SERVER or in the build cache "
        "(`python tools/build_llama_server.py` builds one offline; `make install` does)",
    }


def diagnose() -> dict[str, Any]:
    packages = {name: package_version(name) for name in PACKAGES}
    gpu = gpu_info()
    folder = models_dir()
    probe = folder if folder.exists() else folder.parent
    disk = shutil.disk_usage(probe)
    unsloth_ok = bool(gpu["cuda"] and packages["unsloth"])
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu,
        "packages": packages,
        "executables": {name: shutil.which(name) for name in EXECUTABLES},
        "backends": {
            "unsloth": unsloth_ok,
            "hf": bool(packages["transformers"] and packages["peft"] and packages["trl"]),
        },
        "engines": {
            "llamacpp": bool(packages["llama_cpp"] or shutil.which("llama-server")),
            "vllm": bool(gpu["cuda"] and packages["vllm"]),
        },
        "llama_server": llama_server(),
        "disk": {"models_dir": str(folder), "free_gib": round(disk.free / 2**30, 1)},
    }


def render(report: dict[str, Any]) -> str:
    gpu = report["gpu"]
    if gpu["cuda"]:
        gpus = ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in gpu["devices"])
    else:
        gpus = "none (CPU only)"
    lines = [
        f"python      {report['python']} on {report['platform']}",
        f"gpu         {gpus}",
        "backends    "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report["backends"].items()),
        "engines     "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report["engines"].items()),
        "llama.cpp   "
        + (
            f"native llama-server {report['llama_server']['path']}"
            if report["llama_server"]["native"]
            else f"llama-cpp-python's server: {report['llama_server']['why']}"
        ),
        "packages    "
        + ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v is not None),
        "missing     "
        + (", ".join(k for k, v in report["packages"].items() if v is None) or "nothing"),
        f"disk        {report['disk']['free_gib']} GiB free under {report['disk']['models_dir']}",
    ]
    return "\n".join(lines)
