"""`tuneserve train`: prepare data, load the model through a backend, fine-tune, save the run.

The run folder (models/runs/<name>/) gets the resolved recipe, data/{train,heldout}.jsonl,
checkpoints/ every save_steps, metrics.jsonl, loss.png, adapter/ and manifest.json.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.artifacts import atomic_write_text, remove_stale_temps, run_dir
from toolkit.errors import TuneserveError
from toolkit.recipe import Recipe


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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def last_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def train(
    recipe: Recipe,
    *,
    backend: str = "auto",
    resume: bool = False,
    progress: bool = True,
    echo: Any = print,
) -> TrainResult:
    from toolkit.builtin import resolve_model
    from toolkit.data import prepare_data
    from toolkit.preflight import check_data_needs, check_recipe_needs
    from toolkit.quiet import quiet_libraries
    from toolkit.recipe_loader import save_recipe
    from toolkit.train.backend import choose_backend, cuda_device_count
    from toolkit.train.parallel import plan_parallel

    check_recipe_needs(recipe)  # before anything is written or loaded
    folder = run_dir(recipe.run_name)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    choice = choose_backend(backend, recipe.train.nproc)
    if choice.name == "unsloth":
        # Unsloth patches transformers, peft and trl when imported: it must come before them
        # (on the GPU machine a later import warned that optimizations may not apply).
        import unsloth  # noqa: F401
    quiet_libraries()
    echo(f"backend: {choice.name} ({choice.reason})")
    plan = plan_parallel(recipe.train, choice.name, cuda_device_count())
    echo(f"batch: {plan.describe()}")
    data = prepare_data(recipe.data)
    echo(f"data: {data.describe()}")
    check_data_needs(recipe, data)
    model_path = resolve_model(recipe.model.name)
    checkpoints = folder / "checkpoints"
    start_from = last_checkpoint(checkpoints) if resume else None
    if resume and start_from is None:
        echo("resume: no checkpoint yet, starting from step 0")
    if not resume:
        import shutil

        shutil.rmtree(checkpoints, ignore_errors=True)
        (folder / "metrics.jsonl").unlink(missing_ok=True)
    save_recipe(recipe, folder / "recipe.yaml")
    write_jsonl(folder / "data" / "train.jsonl", data.train)
    write_jsonl(folder / "data" / "heldout.jsonl", data.heldout)

    started = time.monotonic()
    if plan.distributed:
        outcome = _run_distributed(
            plan, recipe, choice.name, model_path, folder, start_from, progress
        )
    else:
        from toolkit.train.session import run_session

        outcome = run_session(
            recipe, choice.name, model_path, data.train, folder, start_from, progress, echo
        )
    seconds = time.monotonic() - started
    if outcome.interrupted:
        raise TrainingInterrupted(
            f"training stopped at step {outcome.steps}; a checkpoint is saved in {checkpoints}",
            f"continue with `tuneserve train {folder / 'recipe.yaml'} --resume`",
        )
    _write_manifest(recipe, folder, model_path, choice.name, outcome, seconds, plan)
    return TrainResult(
        folder,
        choice.name,
        outcome.steps,
        outcome.final_loss,
        seconds,
        str(start_from) if start_from else None,
        plan.world_size,
        plan.global_batch,
    )


def _run_distributed(
    plan: Any,
    recipe: Recipe,
    backend: str,
    model_path: Path,
    folder: Path,
    start_from: Path | None,
    progress: bool,
) -> Any:
    """Every rank reads the recipe and data this process just saved in the run folder."""
    from toolkit.train.backend import cuda_available
    from toolkit.train.launcher import launch
    from toolkit.train.session import SessionOutcome

    job = {
        "folder": str(folder),
        "backend": backend,
        "model_path": str(model_path),
        "resume_from": str(start_from) if start_from else None,
        "progress": progress,
    }
    return SessionOutcome(**launch(plan, job, folder, cuda_available(), progress))


def _write_manifest(
    recipe: Recipe,
    folder: Path,
    model_path: Path,
    backend: str,
    outcome: Any,
    seconds: float,
    plan: Any,
) -> None:
    import importlib.metadata

    from toolkit.artifacts import read_manifest, sha256_file, sha256_text, update_manifest
    from toolkit.recipe_loader import dump_recipe

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
            "name": recipe.model.name,
            "path": str(model_path),
            "sha256": base.get("files", {}).get(weights[0].name, {}).get("sha256")
            if weights and base
            else (sha256_file(weights[0]) if weights else None),
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


def install_stop_handlers(stopper: Any) -> dict[int, Any]:
    """SIGINT/SIGTERM ask the trainer to checkpoint and stop instead of dying mid-step."""

    def request(signum: int, frame: Any) -> None:
        stopper.requested = True

    return {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
