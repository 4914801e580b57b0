"""Stage bookkeeping for `tuneserve run`: what a stage's inputs hash to, and whether it is done.

A stage is done when the run's manifest records it finished with the same inputs hash; the
record is written only after the stage's artifacts are in place (atomically), so a killed
stage is simply redone on the next run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.artifacts import read_manifest, sha256_file, sha256_text, update_manifest
from toolkit.pipeline.progress import StageStatus
from toolkit.recipe.schema import Recipe


def inputs_hash(*parts: Any) -> str:
    """A stable hash of JSON-able parts (recipe sections, file hashes, upstream stage hashes)."""
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:16]


def recipe_section(recipe: Recipe, name: str) -> dict[str, Any]:
    return getattr(recipe, name).model_dump(mode="json")


def data_fingerprint(recipe: Recipe) -> list[str]:
    hashes = []
    for source in recipe.data.sources:
        path = Path(source.path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        hashes.extend(sha256_file(f) for f in files)
    return hashes


def train_inputs(recipe: Recipe, backend: str, base_commit: str | None = None) -> str:
    """What an adapter depends on: model (for a Hub id, the commit it resolved to), LoRA, data
    (and its files' bytes), training knobs, and the backend that ran (`auto` counts as the one
    it picked)."""
    train = {**recipe_section(recipe, "train"), "backend": backend}
    sections = [recipe_section(recipe, name) for name in ("model", "lora", "data")]
    if recipe.eval.select:  # the guarded checkpoint choice decides the adapter too
        ev = recipe.eval
        sections.append(["select", ev.guard_margin, ev.max_tokens, ev.seed])
    return inputs_hash("train", [*sections, train], data_fingerprint(recipe), base_commit)


@dataclass
class Stage:
    """`run(log)` does the work and returns details for the manifest; `probe()` says how far it is."""

    name: str
    describe: str
    inputs: str
    run: Callable[[Callable[[str], None]], dict[str, Any]]
    outputs_present: Callable[[], bool] = lambda: True
    probe: Callable[[], StageStatus] | None = None


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def stage_record(run_dir: Path, name: str) -> dict[str, Any]:
    return read_manifest(run_dir).get("stages", {}).get(name, {})


def is_done(run_dir: Path, stage: Stage) -> bool:
    record = stage_record(run_dir, stage.name)
    return record.get("inputs") == stage.inputs and stage.outputs_present()


def mark_done(
    run_dir: Path, name: str, inputs: str, seconds: float, details: dict[str, Any]
) -> None:
    """Record stage `name` finished with `inputs`; `tuneserve train` records its stage too, so a
    later `run` of the same recipe reuses the adapter."""
    stages = dict(read_manifest(run_dir).get("stages", {}))
    stages[name] = {
        "inputs": inputs,
        "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **details,
    }
    update_manifest(run_dir, stages=stages)


def run_stage(run_dir: Path, stage: Stage, log: Callable[[str], None] = print) -> StageOutcome:
    if is_done(run_dir, stage):
        record = stage_record(run_dir, stage.name)
        return StageOutcome(
            stage.name, True, 0.0, {k: v for k, v in record.items() if k != "inputs"}
        )
    started = time.monotonic()
    details = stage.run(log) or {}
    seconds = time.monotonic() - started
    mark_done(run_dir, stage.name, stage.inputs, seconds, details)
    return StageOutcome(stage.name, False, seconds, details)
