"""`tuneserve run`: train -> export -> serve base and tuned -> eval before/after -> report.

Each stage records the hash of its inputs in the run's manifest (toolkit/stages.py); a re-run
skips stages whose inputs did not change, so a changed learning rate retrains and a new quant
only re-exports (and re-evaluates what it serves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from toolkit.artifacts import run_dir as run_folder
from toolkit.artifacts import sha256_file
from toolkit.errors import TuneserveError
from toolkit.recipe import Recipe
from toolkit.stages import Stage, StageOutcome, inputs_hash, run_stage

SERVE_KEYS = ("engine", "mode")


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[StageOutcome] = field(default_factory=list)
    report_dir: Path | None = None
    served_models: dict[str, Path] = field(default_factory=dict)

    @property
    def seconds(self) -> dict[str, float]:
        return {o.name: round(o.seconds, 1) for o in self.outcomes}


def _section(recipe: Recipe, name: str) -> dict[str, Any]:
    return getattr(recipe, name).model_dump(mode="json")


def _data_fingerprint(recipe: Recipe) -> list[str]:
    hashes = []
    for source in recipe.data.sources:
        path = Path(source.path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        hashes.extend(sha256_file(f) for f in files)
    return hashes


def train_inputs(recipe: Recipe) -> str:
    sections = [_section(recipe, name) for name in ("model", "lora", "data", "train")]
    return inputs_hash("train", sections, _data_fingerprint(recipe))


def export_inputs(recipe: Recipe, upstream: str) -> str:
    return inputs_hash("export", upstream, _section(recipe, "export"))


def eval_inputs(recipe: Recipe, upstream: str) -> str:
    serve = {k: v for k, v in _section(recipe, "serve").items() if k in SERVE_KEYS}
    return inputs_hash("eval", upstream, _section(recipe, "eval"), serve)


def comparison_models(recipe: Recipe, folder: Path) -> dict[str, Path]:
    """Base and tuned in the same format and quantization, so the eval measures the tuning."""
    from toolkit.export import base_gguf, run_gguf

    quant = recipe.export.quant[0]
    return {"base": base_gguf(recipe, quant), "tuned": run_gguf(folder, quant)}


def build_stages(recipe: Recipe, folder: Path, *, backend: str | None, fresh: bool) -> list[Stage]:
    from evals.api import run_eval
    from toolkit.export import export_run, run_gguf
    from toolkit.train import train

    trained = train_inputs(recipe)
    exported = export_inputs(recipe, trained)
    evaluated = eval_inputs(recipe, exported)
    formats = list(dict.fromkeys([*recipe.export.formats, "gguf"]))

    def do_train() -> dict[str, Any]:
        # Resume a killed attempt only if it trained with the same inputs; otherwise start over.
        marker = folder / "train-inputs.txt"
        resume = not fresh and marker.is_file() and marker.read_text() == trained
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(trained)
        result = train(recipe, backend=backend or recipe.train.backend, resume=resume)
        return {"final_loss": result.final_loss, "steps": result.steps, "backend": result.backend}

    def do_export() -> dict[str, Any]:
        return {"exported": export_run(folder, formats, recipe.export.quant)}

    def do_eval() -> dict[str, Any]:
        from serve.app import serve_models

        models = comparison_models(recipe, folder)
        with serve_models(
            [f"{name}={path}" for name, path in models.items()],
            engine="llamacpp",
            mode=None if recipe.serve.mode == "auto" else recipe.serve.mode,
        ) as served:
            report = run_eval(
                suites=recipe.eval.suites,
                models=list(models),
                base_url=served.base_url,
                api_key=served.api_key,
                run=recipe.run_name,
                report_dir=folder / "eval",
                concurrency=recipe.eval.concurrency,
                max_tokens=recipe.eval.max_tokens,
                seed=recipe.eval.seed,
            )
        return {"report": str(folder / "eval"), "scores": report.summary()}

    return [
        Stage(
            "train",
            "fine-tune the adapter",
            trained,
            do_train,
            lambda: (folder / "adapter" / "adapter_config.json").is_file(),
        ),
        Stage(
            "export",
            f"merge and export {', '.join(formats)} ({', '.join(recipe.export.quant)})",
            exported,
            do_export,
            lambda: run_gguf(folder, recipe.export.quant[0]).is_file(),
        ),
        Stage(
            "eval",
            "serve base and tuned, eval before/after",
            evaluated,
            do_eval,
            lambda: (folder / "eval" / "report.json").is_file(),
        ),
    ]


def run_pipeline(
    recipe: Recipe,
    *,
    backend: str | None = None,
    fresh: bool = False,
    echo: Callable[[str], None] = click.echo,
) -> RunResult:
    """Run every stage that is not up to date; return what ran, what was skipped, and where."""
    folder = run_folder(recipe.run_name)
    stages = build_stages(recipe, folder, backend=backend, fresh=fresh)
    result = RunResult(folder)
    for index, stage in enumerate(stages, start=1):
        echo(f"[{index}/{len(stages)}] {stage.name}: {stage.describe}")
        started = time.monotonic()
        outcome = run_stage(folder, stage)
        result.outcomes.append(outcome)
        verdict = "up to date, skipped" if outcome.skipped else "done"
        echo(
            f"[{index}/{len(stages)}] {stage.name}: {verdict} in {time.monotonic() - started:.1f} s"
        )
    result.report_dir = folder / "eval"
    result.served_models = comparison_models(recipe, folder)
    return result


@contextmanager
def keep_serving(recipe: Recipe, result: RunResult) -> Iterator[Any]:
    from serve.app import serve_models

    if recipe.serve.host not in {"127.0.0.1", "localhost", "::1"} and not recipe.serve.api_key:
        raise TuneserveError(
            f"serve.host {recipe.serve.host} is not loopback and serve.api_key is unset",
            "set serve.api_key in the recipe, or serve on 127.0.0.1",
        )
    with serve_models(
        [f"{name}={path}" for name, path in result.served_models.items()],
        engine=recipe.serve.engine,
        host=recipe.serve.host,
        port=recipe.serve.port,
        api_key=recipe.serve.api_key,
        mode=None if recipe.serve.mode == "auto" else recipe.serve.mode,
    ) as served:
        yield served


def usage_snippets(base_url: str, model: str, api_key: str | None) -> str:
    key = api_key or "none"
    return f"""\
from openai import OpenAI
client = OpenAI(base_url="{base_url}", api_key="{key}")
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]
)
print(reply.choices[0].message.content)

curl {base_url}/chat/completions -H 'Content-Type: application/json' \\
  -H 'Authorization: Bearer {key}' \\
  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'"""
