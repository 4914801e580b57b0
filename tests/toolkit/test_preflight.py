"""What a recipe will need is checked before training starts, and export checks a GGUF with the
training text when no split is held out (data.eval_split: 0), instead of failing late."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import toolkit.pipeline.training
from toolkit.core.errors import TuneserveError
from toolkit.pipeline.training import train
from toolkit.recipe.loader import load_recipe

FACTS = Path(__file__).parents[2] / "toolkit" / "demo" / "facts.jsonl"


def recipe_file(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(
        f"data:\n  sources: [{data}]\n  eval_split: 0\n"
        "train:\n  backend: hf\n  max_steps: 1\n" + extra
    )
    return path


def test_train_refuses_a_heldout_suite_with_no_split_before_doing_anything(tmp_path):
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "train", str(recipe_file(tmp_path, FACTS))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: eval.suites includes 'heldout', but data.eval_split is 0")
    assert hint.startswith("hint: set data.eval_split") and "eval.suites" in hint
    assert not (tmp_path / "models" / "runs").exists()  # nothing written, loaded or trained


def test_a_recipe_with_its_own_suites_needs_no_split(tmp_path, monkeypatch):
    from toolkit.pipeline.preflight import check_recipe_needs

    recipe = load_recipe(recipe_file(tmp_path, FACTS, "eval:\n  suites: [guard]\n"))
    check_recipe_needs(recipe)  # no error: nothing needs held-out rows


def test_a_split_that_holds_out_nothing_stops_before_the_model_loads(tmp_path, monkeypatch):
    one_row = tmp_path / "one.jsonl"
    one_row.write_text(FACTS.read_text().splitlines()[0] + "\n")
    path = recipe_file(tmp_path, one_row)
    recipe = load_recipe(path, ["data.eval_split=0.5"])

    def must_not_load(name: str) -> Path:
        raise AssertionError("the model was loaded before the recipe's needs were checked")

    monkeypatch.setattr(toolkit.pipeline.training, "resolve_model", must_not_load)
    with pytest.raises(TuneserveError, match="holds out none") as caught:
        train(recipe, backend="hf", progress=False, echo=lambda _: None)
    assert "eval.suites" in caught.value.hint


@pytest.mark.slow
def test_no_heldout_split_exports_and_checks_the_gguf_on_training_text(tmp_path, base_model):
    """A user who brings their own eval suites: train with eval_split 0, then export GGUF."""
    from toolkit.export.run_export import export_run

    suite = tmp_path / "own_suite.jsonl"
    suite.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "Hi"}],
                                 "expected": "Hello"}) + "\n")  # fmt: skip
    extra = f"eval:\n  suites: [{suite}]\nserve:\n  api_key: never-stored-key-42\n"
    recipe = load_recipe(recipe_file(tmp_path, FACTS, extra), ["train.max_steps=2"])
    result = train(recipe, backend="hf", progress=False, echo=lambda _: None)
    assert (result.run_dir / "data" / "heldout.jsonl").read_text() == ""
    report = export_run(result.run_dir, ["gguf"], ["q8_0"])
    gguf = report["gguf-q8_0"]
    assert gguf["ppl_text"] == "train" and 0.9 < gguf["ppl_ratio"] < 1.1
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["exports"]["gguf-q8_0"]["ppl_text"] == "train"
    # and no secret was stored anywhere in the run folder (recipe.yaml, manifest, logs...)
    for file in result.run_dir.rglob("*"):
        if file.is_file():
            assert b"never-stored-key-42" not in file.read_bytes(), file
