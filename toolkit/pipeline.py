"""`tuneserve run`: train -> export -> serve base and tuned -> eval before/after -> report.

Each stage records the hash of its inputs in the run's manifest (toolkit/stages.py); a re-run
skips stages whose inputs did not change, so a changed learning rate retrains and a new quant
only re-exports (and re-evaluates what it serves).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.artifacts import atomic_write_text, read_manifest, sha256_file, update_manifest
from toolkit.artifacts import run_dir as run_folder
from toolkit.errors import TuneserveError
from toolkit.recipe import Recipe
from toolkit.run_progress import RunProgress, StageStatus
from toolkit.stages import Stage, StageOutcome, inputs_hash, is_done, run_stage, stage_record

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


def last_line(path: Path) -> str:
    """The last complete line of a small append-only file (metrics.jsonl), or ''."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 4096))
        lines = handle.read().decode(errors="replace").splitlines()
    return next((line for line in reversed(lines) if line.endswith("}")), "")


def total_steps(recipe: Recipe, folder: Path) -> int | None:
    """The step count training will reach: max_steps, or epochs over the saved train split."""
    train = recipe.train
    if train.max_steps:
        return train.max_steps
    split = folder / "data" / "train.jsonl"
    if not split.is_file() or not train.num_train_epochs:
        return None
    rows = sum(1 for _ in split.open())
    batches = math.ceil(rows / train.per_device_train_batch_size)
    return math.ceil(batches / train.gradient_accumulation_steps * train.num_train_epochs)


def train_status(recipe: Recipe, folder: Path) -> StageStatus:
    record = last_line(folder / "metrics.jsonl")
    total = total_steps(recipe, folder)
    if not record:
        return StageStatus("preparing data and loading the model", 0, total, "steps")
    row = json.loads(record)
    return StageStatus(f"training, loss {row['loss']:.4f}", row["step"], total, "steps")


def export_status(folder: Path, quants: list[str]) -> StageStatus:
    done = read_manifest(folder).get("exports", {})
    steps = [("merged16", "merging the adapter into the base and checking it (merged16)")]
    steps += [(f"gguf-{q}", f"writing and checking gguf {q}") for q in quants]
    finished = sum(1 for key, _ in steps if key in done)
    doing = next((what for key, what in steps if key not in done), "writing the Modelfile")
    return StageStatus(doing, finished, len(steps), "files")


def forget_stale_exports(folder: Path, adapter_inputs: str) -> None:
    """Exports made from another adapter must be redone, not reused: drop their records.

    Within one adapter the exporter skips what is complete, so a killed export resumes and a
    new quant only adds its file.
    """
    marker = folder / "export-inputs.txt"
    if marker.is_file() and marker.read_text() == adapter_inputs:
        return
    if read_manifest(folder).get("exports"):
        update_manifest(folder, exports={})
    atomic_write_text(marker, adapter_inputs)


def build_stages(recipe: Recipe, folder: Path, *, backend: str | None, fresh: bool) -> list[Stage]:
    from toolkit.export import run_gguf

    trained = train_inputs(recipe)
    exported = export_inputs(recipe, trained)
    evaluated = eval_inputs(recipe, exported)
    formats = list(dict.fromkeys([*recipe.export.formats, "gguf"]))
    quants = list(recipe.export.quant)
    # The eval stage's own progress: it updates this as it goes (engines, requests, report).
    eval_status = StageStatus("starting")

    def do_train(log: Callable[[str], None]) -> dict[str, Any]:
        from toolkit.train import train

        # Resume a killed attempt only if it trained with the same inputs; otherwise start over.
        marker = folder / "train-inputs.txt"
        resume = not fresh and marker.is_file() and marker.read_text() == trained
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, trained)
        result = train(
            recipe, backend=backend or recipe.train.backend, resume=resume, progress=False, echo=log
        )
        return {"final_loss": result.final_loss, "steps": result.steps, "backend": result.backend}

    def do_export(log: Callable[[str], None]) -> dict[str, Any]:
        from toolkit.export import export_run

        forget_stale_exports(folder, trained)
        return {"exported": export_run(folder, formats, quants)}

    def do_eval(log: Callable[[str], None]) -> dict[str, Any]:
        from evals.api import run_eval
        from serve.app import serve_models

        eval_status.doing = f"preparing the base model as gguf {quants[0]}"
        models = comparison_models(recipe, folder)
        eval_status.doing = f"starting llama.cpp for {', '.join(models)}"
        with serve_models(
            [f"{name}={path}" for name, path in models.items()],
            engine="llamacpp",
            mode=None if recipe.serve.mode == "auto" else recipe.serve.mode,
        ) as served:

            def answered(done: int, total: int) -> None:
                eval_status.doing = f"asking {', '.join(models)}"
                eval_status.done, eval_status.total, eval_status.unit = done, total, "requests"

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
                progress=False,
                on_answer=answered,
                # A retrained or re-exported model must not be answered from the old cache.
                model_versions={"base": inputs_hash(trained, quants[0]), "tuned": exported},
                # each run serves on a new port: the cache names the run's gateway instead
                cache_endpoint=f"tuneserve run {recipe.run_name} gateway",
            )
            eval_status.doing = "writing the report"
        return {"report": str(folder / "eval"), "scores": report.summary()}

    return [
        Stage(
            "train",
            "fine-tune the adapter",
            trained,
            do_train,
            lambda: (folder / "adapter" / "adapter_config.json").is_file(),
            lambda: train_status(recipe, folder),
        ),
        Stage(
            "export",
            f"merge and export {', '.join(formats)} ({', '.join(quants)})",
            exported,
            do_export,
            lambda: run_gguf(folder, quants[0]).is_file(),
            lambda: export_status(folder, quants),
        ),
        Stage(
            "eval",
            "serve base and tuned, eval before/after",
            evaluated,
            do_eval,
            lambda: (folder / "eval" / "report.json").is_file(),
            lambda: eval_status,
        ),
    ]


def run_pipeline(
    recipe: Recipe,
    *,
    backend: str | None = None,
    fresh: bool = False,
    echo: Callable[[str], None] | None = None,
    live: bool | None = None,
) -> RunResult:
    """Run every stage that is not up to date; return what ran, what was skipped, and where.

    Progress goes to one display (a live line on a terminal, plain lines otherwise, or `echo`).
    """
    folder = run_folder(recipe.run_name)
    stages = build_stages(recipe, folder, backend=backend, fresh=fresh)
    # Seconds each stage took last time it ran (for the run's ETA); 0 for a stage to be skipped.
    estimates = [
        0.0 if is_done(folder, stage) else stage_record(folder, stage.name).get("seconds")
        for stage in stages
    ]
    result = RunResult(folder)
    with RunProgress(len(stages), live=False if echo else live, echo=echo) as display:
        for index, stage in enumerate(stages, start=1):
            display.start_stage(index, stage.name, stage.describe, stage.probe, estimates[index:])
            outcome = run_stage(folder, stage, display.log)
            result.outcomes.append(outcome)
            display.end_stage("up to date, skipped" if outcome.skipped else "done", outcome.seconds)
    result.report_dir = folder / "eval"
    result.served_models = comparison_models(recipe, folder)
    return result


def serve_api_key(recipe: Recipe) -> str | None:
    """The recipe's serve.api_key, else $TUNESERVE_API_KEY (as `tuneserve serve --api-key`)."""
    import os

    return recipe.serve.api_key or os.environ.get("TUNESERVE_API_KEY") or None


@contextmanager
def keep_serving(recipe: Recipe, result: RunResult) -> Iterator[Any]:
    from serve.app import serve_models

    api_key = serve_api_key(recipe)
    if recipe.serve.host not in {"127.0.0.1", "localhost", "::1"} and not api_key:
        raise TuneserveError(
            f"serve.host {recipe.serve.host} is not loopback and serve.api_key is unset",
            "export TUNESERVE_API_KEY=... (or set serve.api_key in the recipe), "
            "or serve on 127.0.0.1",
        )
    with serve_models(
        [f"{name}={path}" for name, path in result.served_models.items()],
        engine=recipe.serve.engine,
        host=recipe.serve.host,
        port=recipe.serve.port,
        api_key=api_key,
        mode=None if recipe.serve.mode == "auto" else recipe.serve.mode,
    ) as served:
        yield served


def usage_snippets(base_url: str, model: str, api_key: str | None) -> str:
    """A copy-paste `openai` Python snippet and the same request as a curl line.

    The key itself is never printed (terminals and CI logs keep what they show): with a key,
    both read it from $TUNESERVE_API_KEY.
    """
    if api_key:
        preamble = "import os\n# your serve.api_key / --api-key, exported as TUNESERVE_API_KEY\n"
        python_key, header = (
            'os.environ["TUNESERVE_API_KEY"]',
            '"Authorization: Bearer $TUNESERVE_API_KEY"',
        )
    else:
        preamble, python_key, header = "", '"none"', "'Authorization: Bearer none'"
    return f"""\
{preamble}from openai import OpenAI
client = OpenAI(base_url="{base_url}", api_key={python_key})
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]
)
print(reply.choices[0].message.content)

curl {base_url}/chat/completions -H 'Content-Type: application/json' -H {header} -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'"""


def success_message(
    result: RunResult, base_url: str, names: list[str], api_key: str | None, *, serving: bool
) -> str:
    """What a finished run prints: the report, where the models are (or how to serve them),
    and how to call them from Python and curl."""
    report = result.report_dir or result.run_dir / "eval"
    lines = [f"report: {report / 'report.md'} (chart {report / 'report.png'})"]
    if serving:
        lines.append(f"endpoint: {base_url} (Ctrl-C stops)")
    else:
        models = " ".join(f"{name}={path}" for name, path in result.served_models.items())
        lines.append(f"serve the result: tuneserve serve {models}")
        lines.append(f"endpoint once served: {base_url}")
    aliases = ", ".join(f"{n}:thinking, {n}:chat" for n in names)
    lines.append(f"models: {', '.join(names)} (aliases {aliases})")
    lines.append("")
    lines.append(usage_snippets(base_url, names[-1], api_key))
    return "\n".join(lines)
