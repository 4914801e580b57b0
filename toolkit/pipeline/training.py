"""`tuneserve train`: prepare the data, train in child processes (toolkit/train/), save the run.

The run folder (models/runs/<name>/) gets the resolved recipe, data/{train,heldout}.jsonl,
checkpoints/ every save_steps, metrics.jsonl, loss.png, adapter/ and manifest.json.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.base_models.builtin import describe_model, resolve_model
from toolkit.base_models.hub import snapshot_commit, snapshot_file_sha256
from toolkit.core.artifacts import (
    atomic_write_text,
    read_manifest,
    remove_stale_temps,
    run_dir,
    sha256_file,
    sha256_text,
    update_manifest,
)
from toolkit.core.errors import TuneserveError
from toolkit.data import prepare_data
from toolkit.data.replay import add_replay
from toolkit.pipeline.preflight import check_data_needs, check_recipe_needs
from toolkit.pipeline.stages import mark_done, train_inputs
from toolkit.recipe.loader import dump_recipe, save_recipe
from toolkit.recipe.schema import Recipe
from toolkit.train.backend_choice import choose_backend, cuda_device_count
from toolkit.train.launcher import last_checkpoint, launch
from toolkit.train.parallel import plan_parallel
from toolkit.train.session import SessionOutcome, optimizer
from toolkit.train.speed_notes import recipe_notes


class TrainingInterrupted(TuneserveError):
    exit_code = 130


@dataclass
class TrainResult:
    run_dir: Path
    backend: str
    steps: int
    final_loss: float
    seconds: float
    resumed_from: str | None
    world_size: int = 1
    global_batch: int | None = None
    selected: str | None = None  # eval.select: the checkpoint that became the adapter


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def train(
    recipe: Recipe,
    *,
    backend: str = "auto",
    resume: bool = False,
    progress: bool = True,
    echo: Any = print,
    before_data: Any = None,
    after_training: Any = None,
) -> TrainResult:
    """Fine-tune `recipe`. `before_data()`, when given, runs once the layout is known to be
    valid and before the data is read (replay rows are generated there); `after_training()`
    may replace the adapter and returns what it chose (the guarded checkpoint choice), before
    the training is recorded as done."""

    check_recipe_needs(recipe)  # before anything is written or loaded
    folder = run_dir(recipe.run_name)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    choice = choose_backend(backend, recipe.train.nproc)
    echo(f"backend: {choice.name} ({choice.reason})")
    cuda = cuda_device_count() is not None
    plan = plan_parallel(recipe.train, choice.name, cuda_device_count())
    echo(f"batch: {plan.describe()}")
    for note in recipe_notes(recipe, choice.name):
        echo(f"note: {note}")
    optimizer(recipe, cuda, echo)  # says so when adamw_8bit falls back (the child trains quietly)
    if before_data is not None:
        before_data()
    data = prepare_data(recipe.data)
    echo(f"data: {data.describe()}")
    check_data_needs(recipe, data)
    # data.replay: the base's own answers (data/replay.jsonl) mixed in at data.replay.ratio
    if recipe.data.replay.ratio > 0:
        replay_file = folder / "data" / "replay.jsonl"
        added = add_replay(data.train, recipe.data.replay, replay_file, recipe.data.shuffle_seed)
        echo(f"replay: {added} rows of the base's own answers mixed in ({len(data.train)} rows)")
    model_path = resolve_model(recipe.model.name)
    checkpoints = folder / "checkpoints"
    start_from = last_checkpoint(checkpoints) if resume else None
    if resume and start_from is None:
        echo("resume: no checkpoint yet, starting from step 0")
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
        (folder / "metrics.jsonl").unlink(missing_ok=True)
    save_recipe(recipe, folder / "recipe.yaml")
    write_jsonl(folder / "data" / "train.jsonl", data.train)
    write_jsonl(folder / "data" / "heldout.jsonl", data.heldout)

    started = time.monotonic()
    outcome = _train_in_child(plan, choice.name, model_path, folder, start_from, progress, cuda)
    seconds = time.monotonic() - started
    if outcome.interrupted:
        raise TrainingInterrupted(
            f"training stopped at step {outcome.steps}; a checkpoint is saved in {checkpoints}",
            f"continue with `tuneserve train {folder / 'recipe.yaml'} --resume`",
        )
    _write_manifest(recipe, folder, model_path, choice.name, outcome, seconds, plan)
    chosen = after_training() if after_training is not None else None
    selected = chosen["chosen"] if chosen else None
    # `run` reuses this adapter instead of training again (toolkit/pipeline/stages.py).
    mark_done(
        folder,
        "train",
        train_inputs(recipe, choice.name, snapshot_commit(model_path)),
        time.monotonic() - started,
        {"final_loss": outcome.final_loss, "steps": outcome.steps, "backend": choice.name}
        | {"selected": selected},
    )
    return TrainResult(
        folder,
        choice.name,
        outcome.steps,
        outcome.final_loss,
        seconds,
        str(start_from) if start_from else None,
        plan.world_size,
        plan.global_batch,
        selected,
    )


def _train_in_child(
    plan: Any,
    backend: str,
    model_path: Path,
    folder: Path,
    start_from: Path | None,
    progress: bool,
    cuda: bool,
) -> Any:
    """Train in child processes (one, or one per rank under torchrun): when they exit, their GPU
    memory is free for export and the engines, and Unsloth's patches of transformers and PEFT
    (seen breaking a later merge in the same process) never reach this one. Every process
    reads the recipe and data this process just saved in the run folder."""
    job = {
        "folder": str(folder),
        "backend": backend,
        "model_path": str(model_path),
        "resume_from": str(start_from) if start_from else None,
        "progress": progress,
    }
    return SessionOutcome(**launch(plan, job, folder, cuda, progress))


def _write_manifest(
    recipe: Recipe,
    folder: Path,
    model_path: Path,
    backend: str,
    outcome: Any,
    seconds: float,
    plan: Any,
) -> None:
    base = read_manifest(model_path)
    weights = sorted(model_path.glob("*.safetensors"))
    versions = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "unsloth"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    update_manifest(
        folder,
        run=recipe.run_name,
        recipe_sha256=sha256_text(dump_recipe(recipe)),
        base_model={
            **describe_model(recipe.model.name, model_path),  # + the Hub repo and commit
            # A Hub snapshot's weights are named by their sha256 in the cache: no need to hash GBs.
            "sha256": base.get("files", {}).get(weights[0].name, {}).get("sha256")
            if weights and base
            else (
                (snapshot_file_sha256(weights[0]) or sha256_file(weights[0])) if weights else None
            ),
        },
        dataset_sha256={
            s.label: sha256_file(Path(s.path))
            for s in recipe.data.sources
            if Path(s.path).is_file()
        },
        training={
            "backend": backend,
            "steps": outcome.steps,
            "final_loss": outcome.final_loss,
            "seconds": round(seconds, 1),
            "processes": plan.world_size,
            "batch": {
                "per_device": plan.per_device,
                "accumulation": plan.accumulation,
                "global": plan.global_batch,
            },
        },
        versions=versions,
    )
