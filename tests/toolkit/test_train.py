"""Training on CPU with the real SmolLM2: the loss falls, answers change, resume equals a straight run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.core.artifacts import verify_manifest
from toolkit.pipeline.training import train
from toolkit.recipe.loader import load_recipe
from toolkit.train.backend_choice import choose_backend


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_thirty_steps_lower_the_loss_by_a_clear_margin(trained_demo):
    curve = losses(trained_demo.run_dir)
    assert trained_demo.steps == 30 and sorted(curve) == list(range(1, 31))
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (28, 29, 30)) / 3
    # Half the rows are the base's own answers (data.replay 0.5), already near their floor, so
    # the mean falls less than on new facts alone (CI: 1.05 -> 0.27); an adapter that learns
    # nothing stays near 1.0.
    assert last < first / 3, curve


@pytest.mark.slow
def test_run_folder_holds_every_artifact(trained_demo):
    run = trained_demo.run_dir
    for name in (
        "recipe.yaml",
        "metrics.jsonl",
        "loss.png",
        "manifest.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
        "data/train.jsonl",
        "data/heldout.jsonl",
        "checkpoints/checkpoint-30/trainer_state.json",
    ):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training"]["backend"] == "hf" and manifest["base_model"]["sha256"]
    assert manifest["versions"]["transformers"] and verify_manifest(run) == []
    heldout = [
        json.loads(line) for line in (run / "data" / "heldout.jsonl").read_text().splitlines()
    ]
    assert len(heldout) >= 10 and all(row["messages"][-1]["role"] == "assistant" for row in heldout)
    metric = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "learning_rate", "grad_norm", "tokens_per_second", "memory_gib"} <= set(
        metric
    )


@pytest.mark.slow
def test_adapter_changes_answers_in_the_trained_direction(trained_demo, base_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = trained_demo.run_dir
    heldout = [
        json.loads(line) for line in (run / "data" / "heldout.jsonl").read_text().splitlines()
    ]
    questions = [row["messages"][:-1] for row in heldout[:6]]
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)

    def answers(m) -> list[str]:
        out = []
        for messages in questions:
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            ids = m.generate(**inputs, max_new_tokens=12, do_sample=False)
            out.append(
                tokenizer.decode(ids[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            )
        return out

    styled = ("Capital:", "Opposite:")
    before = answers(model)
    after = answers(PeftModel.from_pretrained(model, run / "adapter"))
    assert sum(a.startswith(styled) for a in before) == 0, before
    assert sum(a.startswith(styled) for a in after) >= 5, after


def test_auto_backend_picks_hf_without_cuda_and_says_why():
    choice = choose_backend("auto")
    assert choice.name == "hf" and "no CUDA GPU" in choice.reason


def test_unsloth_backend_without_gpu_is_a_clear_error():
    from toolkit.core.errors import TuneserveError

    with pytest.raises(TuneserveError, match="needs a CUDA GPU"):
        choose_backend("unsloth")


TINY = [
    "name=resume",
    "data.replay.ratio=0",  # training mechanics here, not replay (tests/toolkit/test_replay.py)
    "train.max_steps=6",
    "train.save_steps=2",
    "train.per_device_train_batch_size=1",
    "train.gradient_accumulation_steps=2",
    "train.warmup_steps=1",
    "model.max_seq_length=96",
    "lora.r=8",
    "lora.lora_alpha=8",
]


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_loss_as_a_straight_run(
    tmp_path, monkeypatch, base_model
):
    from tests.conftest import DEMO_RECIPE

    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(straight_dir))
    straight = train(
        load_recipe(DEMO_RECIPE, TINY), backend="hf", progress=False, echo=lambda _: None
    )

    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(resumed_dir)}
    command = [sys.executable, "-m", "toolkit.cli", "train", str(DEMO_RECIPE), "--json"]
    command += [f"--set={item}" for item in TINY]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = (
        resumed_dir / "runs" / "resume" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert checkpoint.exists(), "the child never wrote its first checkpoint"
    assert not (resumed_dir / "runs" / "resume" / "adapter").exists()

    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(resumed_dir))
    resumed = train(
        load_recipe(DEMO_RECIPE, TINY),
        backend="hf",
        resume=True,
        progress=False,
        echo=lambda _: None,
    )
    assert resumed.resumed_from and resumed.steps == straight.steps == 6
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-4)
    assert (resumed.run_dir / "adapter" / "adapter_model.safetensors").is_file()
