"""`tuneserve run`: train -> export -> serve base and tuned -> eval before/after -> report.

Each stage records the hash of its inputs in the run's manifest (toolkit/pipeline/stages.py); a re-run
skips stages whose inputs did not change, so a changed learning rate retrains and a new quant
only re-exports. `tuneserve train` records its stage too, and exports are reused when they
were made from the same adapter, so `train` or `export` then `run` redo nothing.
Training runs in child processes (toolkit/train/launcher.py); the eval asks the engines that
`run --serve` then keeps serving (toolkit/pipeline/comparison.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.api import run_eval
from serve.launcher import check_bind
from toolkit.base_models.builtin import resolve_model
from toolkit.base_models.hub import snapshot_commit
from toolkit.core.artifacts import atomic_write_text, read_manifest
from toolkit.core.artifacts import run_dir as run_folder
from toolkit.export.run_export import export_run, run_gguf
from toolkit.pipeline.comparison import (
    RunServer,
    ServePlan,
    export_formats,
    prepare_base,
    serve_api_key,
)
from toolkit.pipeline.forgetting import prepare_replay, select_checkpoint
from toolkit.pipeline.progress import RunProgress, StageStatus
from toolkit.pipeline.stages import (
    Stage,
    StageOutcome,
    inputs_hash,
    is_done,
    recipe_section,
    run_stage,
    stage_record,
    train_inputs,
)
from toolkit.pipeline.training import train
from toolkit.recipe.schema import Recipe
from toolkit.train.backend_choice import backend_name

# Eval settings that change no answer and no score: changing them does not re-run the eval.
EVAL_KEYS_IGNORED = ("fail_on_regression", "concurrency")


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[StageOutcome] = field(default_factory=list)
    report_dir: Path | None = None
    plan: ServePlan | None = None
    served: Any = None  # serve.launcher.Served while `run --serve` serves

    @property
    def seconds(self) -> dict[str, float]:
        return {o.name: round(o.seconds, 1) for o in self.outcomes}


def export_inputs(recipe: Recipe, trained: str, formats: list[str]) -> str:
    export = {**recipe_section(recipe, "export"), "formats": formats}
    return inputs_hash("export", trained, export)


def served_version(recipe: Recipe, trained: str, engine: str) -> dict[str, str]:
    """What each compared model is, for the eval's response cache and its up-to-date check:
    the base by its recipe section, the tuned one by its training and the form it is served in."""
    form = recipe.export.quant[0] if engine == "llamacpp" else recipe.serve.tuned_as
    return {
        "base": inputs_hash("base", recipe_section(recipe, "model"), engine, form),
        "tuned": inputs_hash("tuned", trained, engine, form),
    }


def eval_inputs(recipe: Recipe, versions: dict[str, str]) -> str:
    settings = {
        k: v for k, v in recipe_section(recipe, "eval").items() if k not in EVAL_KEYS_IGNORED
    }
    return inputs_hash("eval", versions, settings, recipe.serve.mode)


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


def export_status(folder: Path, formats: list[str], quants: list[str]) -> StageStatus:
    done = read_manifest(folder).get("exports", {})
    steps = []
    if {"merged16", "gguf"} & set(formats):
        steps.append(("merged16", "merging the adapter into the base and checking it (merged16)"))
    if "gguf" in formats:
        steps += [(f"gguf-{q}", f"writing and checking gguf {q}") for q in quants]
    finished = sum(1 for key, _ in steps if key in done)
    doing = next((what for key, what in steps if key not in done), "writing the Modelfile")
    return StageStatus(doing, finished, len(steps), "files")


def exports_present(folder: Path, formats: list[str], quants: list[str]) -> bool:
    wanted = [folder / "adapter" / "adapter_config.json"]
    if "merged16" in formats:
        wanted.append(folder / "merged16" / "config.json")
    if "gguf" in formats:
        wanted += [run_gguf(folder, quant) for quant in quants]
    return all(path.is_file() for path in wanted)


def build_stages(
    recipe: Recipe, folder: Path, server: RunServer, *, backend: str | None, fresh: bool
) -> list[Stage]:
    chosen = backend_name(backend or recipe.train.backend, recipe.train.nproc)
    engine = server.engine
    formats = export_formats(recipe, engine)
    quants = list(recipe.export.quant)
    trained = train_inputs(recipe, chosen, snapshot_commit(resolve_model(recipe.model.name)))
    exported = export_inputs(recipe, trained, formats)
    versions = served_version(recipe, trained, engine)
    evaluated = eval_inputs(recipe, versions)
    # The eval stage's own progress: it updates this as it goes (engines, requests, report).
    eval_status = StageStatus("starting")

    def do_train(log: Callable[[str], None]) -> dict[str, Any]:
        # Resume a killed attempt only if it trained with the same inputs; otherwise start over.
        marker = folder / "train-inputs.txt"
        resume = not fresh and marker.is_file() and marker.read_text() == trained
        folder.mkdir(parents=True, exist_ok=True)

        atomic_write_text(marker, trained)

        result = train(
            recipe,
            backend=chosen,
            resume=resume,
            progress=False,
            echo=log,
            # data.replay: the served base answers the replay prompts (cached per base model)
            before_data=lambda: prepare_replay(recipe, folder, log),
            # eval.select: the best heldout checkpoint that keeps the guard becomes the adapter
            after_training=lambda: select_checkpoint(recipe, folder, log),
        )
        return {
            "final_loss": result.final_loss,
            "steps": result.steps,
            "backend": result.backend,
            "selected": result.selected,
        }

    def do_export(log: Callable[[str], None]) -> dict[str, Any]:
        return {"exported": export_run(folder, formats, quants)}

    def do_eval(log: Callable[[str], None]) -> dict[str, Any]:
        if engine == "llamacpp":
            eval_status.doing = f"preparing the base model as gguf {quants[0]}"
        prepare_base(recipe, folder, engine)
        eval_status.doing = f"starting {engine} for base and tuned"
        served = server.start()

        def answered(done: int, total: int) -> None:
            eval_status.doing = "asking base and tuned"
            eval_status.done, eval_status.total, eval_status.unit = done, total, "requests"

        report = run_eval(
            suites=recipe.eval.suites,
            models=["base", "tuned"],
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
            model_versions=versions,
            guard_margin=recipe.eval.guard_margin,  # the guard's non-inferiority verdict
            noise_floor=recipe.eval.noise_floor,  # the base against itself
            # each run serves on a new port: the cache names the run's gateway instead
            cache_endpoint=f"tuneserve run {recipe.run_name} gateway",
        )
        eval_status.doing = "writing the report"
        return {"report": str(folder / "eval"), "scores": report.summary(), "engine": engine}

    return [
        Stage(
            "train",
            f"fine-tune the adapter ({chosen})",
            trained,
            do_train,
            lambda: (folder / "adapter" / "adapter_config.json").is_file(),
            lambda: train_status(recipe, folder),
        ),
        Stage(
            "export",
            f"merge and export {', '.join(formats)}"
            + (f" ({', '.join(quants)})" if "gguf" in formats else ""),
            exported,
            do_export,
            lambda: exports_present(folder, formats, quants),
            lambda: export_status(folder, formats, quants),
        ),
        Stage(
            "eval",
            f"serve base and tuned on {engine}, eval before/after",
            evaluated,
            do_eval,
            lambda: (folder / "eval" / "report.json").is_file(),
            lambda: eval_status,
        ),
    ]


@contextmanager
def run_session(
    recipe: Recipe,
    *,
    backend: str | None = None,
    fresh: bool = False,
    serve: bool = False,
    echo: Callable[[str], None] | None = None,
    live: bool | None = None,
) -> Iterator[RunResult]:
    """Run every stage that is not up to date; yield what ran, what was skipped, and where.

    With `serve`, the result's `served` is the running endpoint (the one the eval asked, or
    started now when the eval was up to date) until the block ends. Progress goes to one
    display (a live line on a terminal, plain lines otherwise, or `echo`).
    """
    folder = run_folder(recipe.run_name)
    if serve:
        check_bind(recipe.serve.host, serve_api_key(recipe))  # before minutes of training
    with ExitStack() as stack:
        server = RunServer(recipe, folder, stack, public=serve)
        stages = build_stages(recipe, folder, server, backend=backend, fresh=fresh)
        # Seconds each stage took last time it ran (for the run's ETA); 0 for one to be skipped.
        estimates = [
            0.0 if is_done(folder, stage) else stage_record(folder, stage.name).get("seconds")
            for stage in stages
        ]
        result = RunResult(folder, report_dir=folder / "eval", plan=server.plan)
        with RunProgress(len(stages), live=False if echo else live, echo=echo) as display:
            for index, stage in enumerate(stages, start=1):
                display.start_stage(
                    index, stage.name, stage.describe, stage.probe, estimates[index:]
                )
                outcome = run_stage(folder, stage, display.log)
                result.outcomes.append(outcome)
                display.end_stage(
                    "up to date, skipped" if outcome.skipped else "done", outcome.seconds
                )
        if serve:
            prepare_base(recipe, folder, server.engine)
            result.served = server.start()
        yield result


def run_pipeline(recipe: Recipe, **options: Any) -> RunResult:
    """`run_session` without serving afterwards: every engine is stopped when it returns."""
    with run_session(recipe, **options) as result:
        return result


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
        # the page that shows base and tuned side by side, the report and the loss curve
        lines.append(f"compare page: {base_url.removesuffix('/v1')}/")
    else:
        assert result.plan is not None
        lines.append(f"serve the result: {result.plan.command()}")
        lines.append(f"endpoint once served: {base_url}")
    aliases = ", ".join(f"{n}:thinking, {n}:chat" for n in names)
    lines.append(f"models: {', '.join(names)} (aliases {aliases})")
    lines.append("")
    lines.append(usage_snippets(base_url, names[-1], api_key))
    return "\n".join(lines)
