"""Multi-process training (`--nproc`): the batch layout, the CLI, and real DDP over gloo on CPU
reaching the loss curve of one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_RECIPE
from tests.process_tree import alive, descendants
from toolkit.core.errors import TuneserveError
from toolkit.recipe.loader import load_recipe
from toolkit.recipe.schema import TrainSection
from toolkit.train.parallel import plan_parallel

# Per-step |loss(2 processes) - loss(1 process)| allowed. Measured on CPU (torch 2.13, gloo,
# fp32): 0.0 at every step, loss and grad norm bitwise equal (each rank's micro-batch gradient
# is summed once, as accumulation sums them; the scalings are powers of two). The bound leaves
# room only for another reduction order, far below a step's loss change (~0.1).
LOSS_TOLERANCE = 1e-6


@pytest.mark.parametrize(
    ("nproc", "accumulation", "expected"),
    [(1, 4, (1, 2, 4)), (2, 4, (2, 2, 2)), (4, 4, (4, 2, 1)), (3, 6, (3, 2, 2))],
)
def test_the_global_batch_stays_the_recipes(nproc, accumulation, expected):
    train = TrainSection(
        nproc=nproc, per_device_train_batch_size=2, gradient_accumulation_steps=accumulation
    )
    plan = plan_parallel(train, "hf", gpus=None)
    assert (plan.world_size, plan.per_device, plan.accumulation) == expected
    assert plan.global_batch == 2 * accumulation
    assert f"= {2 * accumulation} rows per step" in plan.describe()


def test_an_accumulation_the_processes_cannot_share_says_what_to_set():
    train = TrainSection(nproc=3, gradient_accumulation_steps=4)
    with pytest.raises(TuneserveError) as caught:
        plan_parallel(train, "hf", gpus=None)
    assert "not divisible by train.nproc 3" in caught.value.message
    assert "gradient_accumulation_steps to a multiple of 3 (e.g. 6)" in caught.value.hint


@pytest.mark.parametrize(
    ("train", "backend", "gpus", "message", "hint"),
    [
        (TrainSection(nproc=2), "unsloth", 2, "unsloth trains on one GPU", "--backend hf"),
        (TrainSection(nproc=4), "hf", 2, "2 CUDA GPU(s)", "at most 2"),
        (TrainSection(fsdp=True), "hf", 2, "train.nproc is 1", "--nproc"),
        (TrainSection(nproc=2, fsdp=True), "hf", None, "needs CUDA GPUs", "train.fsdp: false"),
    ],
)
def test_layouts_that_cannot_run_are_clear_errors(train, backend, gpus, message, hint):
    with pytest.raises(TuneserveError) as caught:
        plan_parallel(train, backend, gpus)
    assert message in caught.value.message and hint in caught.value.hint


def test_nproc_and_fsdp_are_recipe_keys_and_typos_are_still_rejected():
    recipe = load_recipe(DEMO_RECIPE, ["train.nproc=2", "train.fsdp=false"])
    assert recipe.train.nproc == 2 and recipe.train.fsdp is False
    with pytest.raises(TuneserveError, match="nprocs"):
        load_recipe(DEMO_RECIPE, ["train.nprocs=2"])


def test_cli_nproc_reaches_the_plan(tmp_path):
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "toolkit.cli", "train", str(DEMO_RECIPE), "--nproc", "3"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "error: train.gradient_accumulation_steps 4 is not divisible by" in done.stderr
    assert "hint: set train.gradient_accumulation_steps to a multiple of 3" in done.stderr


# The demo recipe made cheap: 4 steps of 4 rows, short rows, a small adapter.
SMALL = [
    "train.max_steps=4",
    "data.replay.ratio=0",  # training mechanics here, not replay (tests/toolkit/test_replay.py)
    "train.save_steps=2",
    "train.per_device_train_batch_size=2",
    "train.gradient_accumulation_steps=2",
    "train.warmup_steps=1",
    "model.max_seq_length=96",
    "lora.r=8",
    "lora.lora_alpha=8",
]


def _train(name: str, models: Path, nproc: int, extra: list[str] | None = None):
    from toolkit.pipeline.training import train

    os.environ["TUNESERVE_MODELS_DIR"] = str(models)
    recipe = load_recipe(
        DEMO_RECIPE, [f"name={name}", f"train.nproc={nproc}", *SMALL, *(extra or [])]
    )
    return train(recipe, backend="hf", progress=False, echo=lambda _: None)


def _curve(run: Path, key: str = "loss") -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row[key] for row in rows}


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, base_model):
    """The same recipe trained by one process and by two (gloo), each in its own models/."""
    saved = os.environ.get("TUNESERVE_MODELS_DIR")
    try:
        one = _train("ddp", tmp_path_factory.mktemp("one"), 1)
        two = _train("ddp", tmp_path_factory.mktemp("two"), 2)
    finally:
        if saved is not None:
            os.environ["TUNESERVE_MODELS_DIR"] = saved
    return one, two


@pytest.mark.slow
def test_two_processes_reach_the_loss_curve_of_one(one_and_two):
    one, two = one_and_two
    assert (two.world_size, two.global_batch) == (2, 4) and one.global_batch == 4
    first, second = _curve(one.run_dir), _curve(two.run_dir)
    assert sorted(first) == sorted(second) == [1, 2, 3, 4]
    differences = {step: abs(first[step] - second[step]) for step in first}
    print(f"per-step |loss(2) - loss(1)|: {differences}")
    assert max(differences.values()) <= LOSS_TOLERANCE, (first, second)
    assert first[4] < first[1] - 0.1  # it trained: the curve moves far more than the tolerance
    norms = _curve(one.run_dir, "grad_norm"), _curve(two.run_dir, "grad_norm")
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)


@pytest.mark.slow
def test_only_rank_zero_writes_and_checkpoints_resume(one_and_two):
    _, two = one_and_two
    run = two.run_dir
    for name in ("adapter/adapter_model.safetensors", "loss.png", "manifest.json"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4  # not one set per rank
    assert (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training"]["processes"] == 2
    assert manifest["training"]["batch"] == {"per_device": 2, "accumulation": 1, "global": 4}
    assert not list(run.glob(".launch-*")), "the launcher's job folder was left behind"


@pytest.mark.slow
def test_a_failing_rank_is_one_clear_error(tmp_path, base_model):
    # every row is cut before its answer: each rank's tokenizer step raises a TuneserveError
    with pytest.raises(TuneserveError) as caught:
        _train("broken", tmp_path, 2, ["model.max_seq_length=8"])
    message = caught.value.message
    assert message.startswith("training failed on rank ") and " of 2: every training row" in message
    assert "\n" not in message and caught.value.exit_code == 2


@pytest.mark.slow  # trains on 2 processes, stops them, resumes: ~35 s
def test_sigterm_checkpoints_every_rank_leaves_no_process_and_resume_finishes(tmp_path, base_model):
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "toolkit.cli", "train", str(DEMO_RECIPE), "--nproc", "2"]
    command += [f"--set={item}" for item in ["name=stop", *SMALL, "train.max_steps=40"]]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = tmp_path / "runs" / "stop"
    seen: set[int] = set()
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "checkpoint-2").is_dir() and time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        seen |= descendants(child.pid)
        time.sleep(0.2)
    seen |= descendants(child.pid)
    assert len(seen) >= 3, "expected torchrun and two ranks under the launcher"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert b"--resume" in stderr
    assert not [pid for pid in seen if alive(pid)], "a training process outlived the launcher"
    stopped = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))
    assert 2 <= stopped < 40 and not (run / "adapter").exists()

    resume = [*command[:4], str(run / "recipe.yaml"), "--resume", "--json"]
    resume += ["--nproc", "2", f"--set=train.max_steps={stopped + 2}"]
    resumed = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["steps"] == stopped + 2 and result["resumed_from"].endswith(f"-{stopped}")
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
