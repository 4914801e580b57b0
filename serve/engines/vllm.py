"""vLLM engine: `vllm serve` on a merged16 folder, adapters through --enable-lora.

Tool calls are vLLM's own: `--enable-auto-tool-choice --tool-call-parser hermes` parses the
`<tool_call>` JSON that Qwen3-style templates ask for, and its structured outputs enforce a
`required` or named `tool_choice` (a later `--engine-arg=--tool-call-parser=X` wins).

The flags emitted here are checked against `vllm_cli_snapshot.json`, flags read from vLLM's
own argument parser source (tests/serve/test_engines.py), so a launcher typo cannot ship.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from serve.engines.base import Engine
from toolkit.core.modes import template_knows_thinking

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # --max-lora-rank choices


def lora_rank_bound(rank: int) -> int:
    """The smallest --max-lora-rank choice that holds an adapter of `rank`."""
    for choice in LORA_RANKS:
        if rank <= choice:
            return choice
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank {LORA_RANKS[-1]}")


def _adapter_rank(adapter: Path) -> int:
    config = adapter / "adapter_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("r", 16))
    return 16


@dataclass
class VllmEngine(Engine):
    max_model_len: int | None = None  # None: the model's own (config.json), as vLLM does
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    lora_modules: dict[str, Path] = field(default_factory=dict)
    generation_config: str = "auto"

    kind: ClassVar[str] = "vllm"
    parses_tools: ClassVar[bool] = True

    @staticmethod
    def available() -> bool:
        """vllm importable (or on PATH) and a CUDA GPU present."""
        import importlib.util

        if importlib.util.find_spec("vllm") is None and shutil.which("vllm") is None:
            return False
        try:
            import torch

            return bool(torch.cuda.is_available())
        except ImportError:
            return False

    @property
    def readiness_url(self) -> str:
        return f"{self.base_url}/health"

    def chat_template(self) -> str | None:
        folder = Path(self.model_path)
        jinja = folder / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text()
        config = folder / "tokenizer_config.json"
        if config.is_file():
            template = json.loads(config.read_text()).get("chat_template")
            return template if isinstance(template, str) else None
        return None

    @staticmethod
    def launcher() -> list[str]:
        """`vllm` when on PATH, else its CLI module: wheels installed with `pip --target` (as on
        an offline GPU machine) bring the package but no script."""
        if shutil.which("vllm"):
            return ["vllm"]
        return [sys.executable, "-m", "vllm.entrypoints.cli.main"]

    def command(self) -> list[str]:
        argv = [*self.launcher(), "serve", str(self.model_path)]
        argv += ["--served-model-name", self.name]
        argv += ["--host", self.host, "--port", str(self.port)]
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        argv += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.pipeline_parallel_size > 1:
            argv += ["--pipeline-parallel-size", str(self.pipeline_parallel_size)]
        argv += ["--generation-config", self.generation_config]
        if self.lora_modules:
            rank = max(_adapter_rank(Path(path)) for path in self.lora_modules.values())
            argv += ["--enable-lora", "--max-lora-rank", str(lora_rank_bound(rank))]
            argv += ["--lora-modules"]
            argv += [f"{name}={path}" for name, path in self.lora_modules.items()]
        if self.embeddings:  # a pooling model: /v1/embeddings, no generation
            argv += ["--runner", "pooling", "--convert", "embed"]
        else:
            argv += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
        if template_knows_thinking(self.chat_template()) and not self.embeddings:
            argv += ["--reasoning-parser", "qwen3"]
        return argv

    def key_environment(self) -> dict[str, str]:
        # vLLM's server takes `args.api_key or [envs.VLLM_API_KEY]` (entrypoints/openai
        # api_server.py) and then requires `Authorization: Bearer KEY` on every /v1 path.
        return {"VLLM_API_KEY": self.api_key or ""}
