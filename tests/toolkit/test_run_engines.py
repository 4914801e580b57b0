"""`tuneserve run` on the engine it evaluates with: vLLM (the stand-in `vllm` of the serve tests,
answering as vLLM does) serves the base with the adapter as a LoRA module and no GGUF is made;
finished training and exports are reused across commands; training never loads in the caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve.engines import VllmEngine
from tests.command_standin import put_on_path
from tests.conftest import DEMO_RECIPE, REPO
from tests.serve.test_vllm_launch import FAKE_VLLM, _launches
from toolkit.pipeline.comparison import export_formats, run_engine
from toolkit.recipe.loader import load_recipe

# A run as small as they get; `export.formats` unset, so the engine's defaults apply.
TINY = [
    "name=tiny",
    "train.max_steps=4",
    "train.save_steps=4",
    "train.per_device_train_batch_size=1",
    "train.gradient_accumulation_steps=1",
    "model.max_seq_length=96",
    "lora.r=8",
    "lora.lora_alpha=8",
    "export.formats=null",
    "data.replay.ratio=0",  # replay on vLLM: test_replay_is_answered_by_the_runs_engine
    "eval.suites=[heldout]",
    "eval.max_tokens=8",
]
ON_VLLM = [*TINY, "serve.engine=vllm"]


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    """A `vllm` on PATH that answers chat requests with `model=<the model asked>`."""
    return put_on_path(
        tmp_path, monkeypatch, "vllm", FAKE_VLLM.format(python=sys.executable), keep_path=True
    )


@pytest.mark.parametrize("available", [True, False])
def test_auto_engine_is_vllm_where_cuda_and_vllm_are(monkeypatch, available):
    monkeypatch.setattr(VllmEngine, "available", staticmethod(lambda: available))
    recipe = load_recipe(None, ["serve.engine=auto"])
    assert run_engine(recipe) == ("vllm" if available else "llamacpp")
    assert run_engine(load_recipe(None, ["serve.engine=llamacpp"])) == "llamacpp"


@pytest.mark.parametrize(
    ("overrides", "engine", "formats"),
    [
        ([], "vllm", ["lora", "merged16"]),  # no GGUF where vLLM serves
        ([], "llamacpp", ["merged16", "gguf"]),
        (["serve.tuned_as=merged16"], "vllm", ["lora", "merged16"]),
        (
            ["export.formats=[merged16]"],
            "vllm",
            ["merged16", "lora"],
        ),  # the eval serves the adapter
        (["export.formats=[merged16]", "serve.tuned_as=merged16"], "vllm", ["merged16"]),
        (["export.formats=[lora]"], "llamacpp", ["lora", "gguf"]),  # llama.cpp serves a GGUF
    ],
)
def test_exports_follow_the_engine_and_what_the_eval_serves(overrides, engine, formats):
    assert export_formats(load_recipe(None, overrides), engine) == formats


def _files(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_run_on_vllm_serves_the_adapter_on_the_base_engine_and_makes_no_gguf(
    fake_vllm, tmp_path, monkeypatch, base_model
):
    from toolkit.pipeline.run import run_pipeline

    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(tmp_path / "models"))
    result = run_pipeline(load_recipe(DEMO_RECIPE, ON_VLLM), echo=lambda _: None)
    assert [o.skipped for o in result.outcomes] == [False, False, False]
    run = result.run_dir
    assert (run / "merged16" / "config.json").is_file()
    assert not (run / "gguf").exists(), "a GGUF was made though vLLM serves the eval"

    [argv] = _launches(fake_vllm)  # one engine: the base, carrying the adapter
    assert argv[:2] == ["serve", str(base_model)]
    assert "--enable-lora" in argv
    assert argv[argv.index("--lora-modules") + 1] == f"tuned={run / 'adapter'}"
    answers = [json.loads(line)["answer"] for line in (run / "eval" / "responses.jsonl").open()]
    assert {a["output"] for a in answers} == {"model=base", "model=tuned"}
    command = result.plan.command()
    assert command.endswith(f"--lora tuned={run / 'adapter'} --engine vllm --report {run / 'eval'}")

    # The merged folder instead: only the eval is redone, on two engines.
    first = set(fake_vllm.glob("*.json"))
    merged = run_pipeline(
        load_recipe(DEMO_RECIPE, [*ON_VLLM, "serve.tuned_as=merged16"]), echo=lambda _: None
    )
    assert [o.skipped for o in merged.outcomes] == [True, True, False]
    later = [json.loads(p.read_text()) for p in set(fake_vllm.glob("*.json")) - first]
    served = sorted(argv[1] for argv in later)
    assert served == sorted([str(base_model), str(run / "merged16")])


@pytest.mark.slow
def test_train_then_export_then_run_redoes_neither(fake_vllm, tmp_path, monkeypatch, base_model):
    from toolkit.export.run_export import export_run
    from toolkit.pipeline.run import run_pipeline
    from toolkit.pipeline.training import train

    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(tmp_path / "models"))
    recipe = load_recipe(DEMO_RECIPE, ON_VLLM)
    trained = train(recipe, backend="auto", progress=False, echo=lambda _: None)
    export_run(trained.run_dir, ["lora", "merged16"], ["q8_0"])
    made = _files(trained.run_dir / "merged16") | _files(trained.run_dir / "adapter")
    exports = json.loads((trained.run_dir / "manifest.json").read_text())["exports"]

    result = run_pipeline(recipe, echo=lambda _: None)
    outcomes = {o.name: o for o in result.outcomes}
    assert outcomes["train"].skipped, "run retrained the adapter `train` had just made"
    assert _files(trained.run_dir / "merged16") | _files(trained.run_dir / "adapter") == made
    after = json.loads((trained.run_dir / "manifest.json").read_text())["exports"]
    assert after == exports
    assert not outcomes["eval"].skipped


@pytest.mark.slow
def test_training_never_loads_in_the_calling_process(tmp_path, base_model):
    """Unsloth patches transformers and PEFT in the process that imports it (a later merge in
    that process failed with tensors on cuda:0 and cpu): training runs in a child, so the
    caller never imports the training stack and gets the GPU back when it ends."""
    script = f"""
import sys
from toolkit.recipe.loader import load_recipe
from toolkit.pipeline.training import train
result = train(load_recipe({str(DEMO_RECIPE)!r}, {TINY!r}), backend="hf", progress=False,
               echo=lambda _: None)
assert result.steps == 4, result
loaded = sorted(m for m in ("trl", "peft", "unsloth") if m in sys.modules)
print("loaded:", loaded)
"""
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout


def test_replay_is_answered_by_the_runs_engine(fake_vllm, tmp_path, monkeypatch, base_model):
    """data.replay on a vLLM run: the base folder on vLLM answers the replay prompts (no GGUF)."""
    from toolkit.data import replay
    from toolkit.pipeline.forgetting import prepare_replay

    monkeypatch.setattr(replay, "base_models_dir", lambda: tmp_path / "base-cache")
    recipe = load_recipe(DEMO_RECIPE, [*ON_VLLM, "data.replay.ratio=0.5"])
    made = prepare_replay(recipe, tmp_path / "run", echo=lambda _: None)
    rows = [json.loads(line) for line in made.read_text().splitlines()]
    assert rows and {row["messages"][-1]["content"] for row in rows} == {"model=base"}
    [argv] = _launches(fake_vllm)
    assert argv[:2] == ["serve", str(base_model)] and "--enable-lora" not in argv
    assert not (tmp_path / "base-cache" / "gguf").exists()
