"""`tuneserve run` end to end on a tiny recipe, then again: nothing is recomputed."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO_RECIPE
from toolkit.pipeline.run import run_pipeline
from toolkit.recipe.loader import load_recipe

pytestmark = pytest.mark.slow

TINY = [
    "name=tiny",
    "train.max_steps=8",
    "train.save_steps=4",
    "eval.suites=[heldout]",
    "eval.max_tokens=12",
]


def test_run_end_to_end_then_again_skips_every_stage(tmp_path, monkeypatch, base_model):
    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(tmp_path / "models"))
    lines: list[str] = []
    first = run_pipeline(load_recipe(DEMO_RECIPE, TINY), echo=lines.append)
    assert [o.name for o in first.outcomes] == ["train", "export", "eval"]
    assert not any(o.skipped for o in first.outcomes)
    report = json.loads((first.run_dir / "eval" / "report.json").read_text())
    scores = {(s["suite"], s["model"]): s["score"] for s in report["models"]}
    assert scores[("heldout", "tuned")] > scores[("heldout", "base")]
    assert (first.run_dir / "eval" / "report.png").is_file()

    before = {
        p: p.stat().st_mtime_ns
        for p in first.run_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    again = run_pipeline(load_recipe(DEMO_RECIPE, TINY), echo=lines.append)
    assert all(o.skipped for o in again.outcomes)
    after = {
        p: p.stat().st_mtime_ns
        for p in first.run_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert after == before  # nothing rewritten

    changed = run_pipeline(
        load_recipe(DEMO_RECIPE, [*TINY, "eval.max_tokens=16"]), echo=lines.append
    )
    assert [o.skipped for o in changed.outcomes] == [True, True, False]
