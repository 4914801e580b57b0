"""What `tuneserve run` serves to compare base and tuned, and on which engine.

vLLM where CUDA and vLLM are (the tuned model as a LoRA module on the base's engine by default:
one process, half the memory and startup of two), llama.cpp elsewhere (base and tuned as GGUF
files of the same quantization, so the comparison measures the tuning, not the format).
The same engines answer the eval and then, with `run --serve`, the user.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.engines import VllmEngine
from serve.launcher import serve_models
from toolkit.base_models.builtin import trained_base
from toolkit.export.run_export import base_gguf, base_gguf_path, run_gguf
from toolkit.recipe.schema import Recipe

# vLLM's startup (weights, torch.compile, CUDA graphs) takes minutes; engines sharing a GPU
# load one after another (serve/launcher.py), so the bound is per engine.
READY_TIMEOUT = {"vllm": 900.0, "llamacpp": 300.0}


def run_engine(recipe: Recipe) -> str:
    """The recipe's `serve.engine`; auto: vLLM where CUDA and vLLM are present, else llama.cpp."""
    if recipe.serve.engine != "auto":
        return recipe.serve.engine

    return "vllm" if VllmEngine.available() else "llamacpp"


def export_formats(recipe: Recipe, engine: str) -> list[str]:
    """The recipe's export formats (or the engine's defaults), plus what the eval serves."""
    formats = list(recipe.export.formats or recipe.export.default_formats(engine))
    needed = "gguf" if engine == "llamacpp" else recipe.serve.tuned_as
    return formats if needed in formats else [*formats, needed]


@dataclass
class ServePlan:
    """The models to serve (`NAME=PATH`) and the adapters riding on them (`NAME=ADAPTER`)."""

    engine: str
    models: list[str]
    lora: list[str] = field(default_factory=list)
    report: Path | None = None  # the run's eval folder, for the compare page

    @property
    def names(self) -> list[str]:
        return [item.partition("=")[0] for item in (*self.models, *self.lora)]

    def command(self) -> str:
        """The `tuneserve serve` line that serves the same thing."""
        words = [*self.models, *(f"--lora {item}" for item in self.lora)]
        return f"tuneserve serve {' '.join(words)} --engine {self.engine} --report {self.report}"


def serve_plan(recipe: Recipe, folder: Path, engine: str) -> ServePlan:
    """Base and tuned for `engine` (the files must exist: see `prepare_base`)."""
    base = trained_base(folder, recipe.model.name)
    if engine == "llamacpp":
        quant = recipe.export.quant[0]
        gguf = base_gguf_path(base, quant)
        return ServePlan(
            engine, [f"base={gguf}", f"tuned={run_gguf(folder, quant)}"], [], folder / "eval"
        )
    if recipe.serve.tuned_as == "lora":
        return ServePlan(engine, [f"base={base}"], [f"tuned={folder / 'adapter'}"], folder / "eval")
    return ServePlan(engine, [f"base={base}", f"tuned={folder / 'merged16'}"], [], folder / "eval")


def prepare_base(recipe: Recipe, folder: Path, engine: str) -> None:
    """The base in the served format: a GGUF of the eval quant for llama.cpp (made once)."""
    if engine == "llamacpp":
        base_gguf(trained_base(folder, recipe.model.name), recipe.export.quant[0])


def serve_api_key(recipe: Recipe) -> str | None:
    """The recipe's serve.api_key, else $TUNESERVE_API_KEY (as `tuneserve serve --api-key`)."""
    return recipe.serve.api_key or os.environ.get("TUNESERVE_API_KEY") or None


class RunServer:
    """The engines and gateway of one `run`, started at most once and stopped with `stack`.

    `public` (for `run --serve`): bound to the recipe's host, port and key from the start, so
    the engines that answered the eval go on serving the user without a restart.
    """

    def __init__(self, recipe: Recipe, folder: Path, stack: ExitStack, *, public: bool) -> None:
        self.recipe, self.folder, self.stack, self.public = recipe, folder, stack, public
        self.engine = run_engine(recipe)
        self.served: Any = None

    @property
    def plan(self) -> ServePlan:
        return serve_plan(self.recipe, self.folder, self.engine)

    def start(self) -> Any:
        """The running `serve.launcher.Served`, started on first use."""
        if self.served is None:
            serve = self.recipe.serve
            key = serve_api_key(self.recipe)
            where = {"host": serve.host, "port": serve.port, "api_key": key}
            plan = self.plan
            report = self.folder / "eval"  # the eval writes it: the page shows it once there
            report.mkdir(parents=True, exist_ok=True)
            self.served = self.stack.enter_context(
                serve_models(
                    plan.models,
                    lora=plan.lora,
                    engine=plan.engine,
                    mode=None if serve.mode == "auto" else serve.mode,
                    ready_timeout=READY_TIMEOUT[plan.engine],
                    report_dir=report,  # the compare page shows this run's report and loss
                    **(where if self.public else {}),
                )
            )
        return self.served
