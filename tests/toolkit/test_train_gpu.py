"""GPU training: the unsloth and hf backends, each in 4-bit and 16-bit, on a tiny Qwen3.

Run on a CUDA machine with `pytest -m gpu tests/toolkit/test_train_gpu.py -s`; each test prints
the tokens/s and peak memory it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

RECIPE = """\
name: {name}
model:
  name: {model}
  max_seq_length: 256
  load_in_4bit: {four_bit}
lora:
  r: 16
  lora_alpha: 16
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
  use_gradient_checkpointing: unsloth
data:
  sources:
    - path: {data}
  eval_split: 0.1
train:
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 4
  max_steps: 20
  learning_rate: 1e-3
  warmup_steps: 2
  save_steps: 10
"""


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory, base_model: Path) -> Path:
    from tests.qwen3_shapes import build_qwen3

    return build_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3", "tiny", base_model)


def _train(tmp_path: Path, model: Path, backend: str, four_bit: bool, nproc: int = 1) -> dict:
    """`tuneserve train` in its own process, as users run it: Unsloth patches transformers and
    TRL when imported, so an hf run in a process that imported it would not be plain hf."""
    data = Path(__file__).resolve().parents[2] / "toolkit" / "demo" / "facts.jsonl"
    path = tmp_path / "recipe.yaml"
    name = f"gpu-{backend}-{'4bit' if four_bit else '16bit'}-{nproc}p"
    path.write_text(
        RECIPE.format(name=name, model=model, four_bit=str(four_bit).lower(), data=data)
    )
    command = [sys.executable, "-m", "toolkit.cli", "train", str(path), "--backend", backend]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    run = Path(os.environ["TUNESERVE_MODELS_DIR"]) / "runs" / name
    ranks = run / "logs" / "train-ranks.log"  # the worker's own report of a failure
    worker = ranks.read_text()[-3000:] if ranks.is_file() and done.returncode else ""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + worker
    assert f"backend: {backend}" in done.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss" in row]
    speeds = sorted(row["tokens_per_second"] for row in steps if row.get("tokens_per_second"))
    peak = max(row.get("memory_gib") or 0 for row in steps)
    print(
        f"\n{name}: {len(steps)} steps in {seconds:.1f} s (process), final loss "
        f"{steps[-1]['loss']:.4f}, median {speeds[len(speeds) // 2]:.0f} tokens/s, "
        f"peak memory {peak:.3f} GiB"
    )
    assert len(steps) == 20
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert steps[-1]["loss"] < steps[0]["loss"], f"loss did not fall: {steps[0]} -> {steps[-1]}"
    return {"run": run, "rows": steps, "stdout": done.stdout}


@pytest.mark.parametrize("four_bit", [True, False], ids=["4bit", "16bit"])
def test_unsloth_trains_the_tiny_qwen3(tmp_path: Path, tiny_qwen3: Path, four_bit: bool) -> None:
    pytest.importorskip("unsloth", reason="the unsloth extra is not installed")
    _train(tmp_path, tiny_qwen3, "unsloth", four_bit)


@pytest.mark.parametrize("four_bit", [True, False], ids=["4bit", "16bit"])
def test_hf_trains_the_tiny_qwen3_on_cuda(tmp_path: Path, tiny_qwen3: Path, four_bit: bool) -> None:
    """On a machine with several GPUs too: one process trains on one GPU (Trainer's
    nn.DataParallel, which SFTTrainer refuses, once broke this on a 2-GPU machine)."""
    if four_bit:
        pytest.importorskip("bitsandbytes", reason="4-bit needs bitsandbytes")
    _train(tmp_path, tiny_qwen3, "hf", four_bit)


def test_hf_trains_data_parallel_on_two_gpus(tmp_path: Path, tiny_qwen3: Path) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs: this machine has fewer")
    result = _train(tmp_path, tiny_qwen3, "hf", False, nproc=2)
    assert "x 2 processes" in result["stdout"] and "DDP" in result["stdout"]


@pytest.fixture(scope="module")
def tiny_qwen3_4bit(tmp_path_factory: pytest.TempPathFactory, tiny_qwen3: Path) -> Path:
    """The tiny Qwen3 saved in bitsandbytes 4-bit, as Unsloth's `unsloth/...-bnb-4bit` repos are."""
    pytest.importorskip("bitsandbytes", reason="4-bit needs bitsandbytes")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    out = tmp_path_factory.mktemp("qwen3-4bit") / "tiny-qwen3-bnb-4bit"
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    model = AutoModelForCausalLM.from_pretrained(
        tiny_qwen3, quantization_config=quant, device_map={"": 0}
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_qwen3).save_pretrained(out)
    return out


@pytest.mark.parametrize("backend", ["unsloth", "hf"])
def test_a_4bit_saved_base_trains_and_merges_into_16bit(
    tmp_path: Path, tiny_qwen3_4bit: Path, backend: str
) -> None:
    """The recipe says nothing of 4-bit: the base's own quantization config decides; merged16
    dequantizes it (on the GPU) and adds the adapter, and the folder is plain 16-bit."""
    if backend == "unsloth":
        pytest.importorskip("unsloth", reason="the unsloth extra is not installed")
    from toolkit.base_models.prequantized import is_prequantized_4bit

    assert is_prequantized_4bit(tiny_qwen3_4bit)
    run = _train(tmp_path, tiny_qwen3_4bit, backend, four_bit=False)["run"]
    command = [sys.executable, "-m", "toolkit.cli", "--debug", "export", str(run)]
    command += ["--format", "merged16"]  # --debug: a failure shows its traceback
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    config = json.loads((run / "merged16" / "config.json").read_text())
    assert "quantization_config" not in config
    figures = json.loads((run / "manifest.json").read_text())["exports"]["merged16"]
    print(f"\n4-bit base, {backend}: merged16 {figures}")
    assert figures["merge_matches"] and figures["greedy_match_saved"] == 1.0
