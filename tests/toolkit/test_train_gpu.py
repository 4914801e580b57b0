"""GPU training: the unsloth and hf backends, each in 4-bit and 16-bit, on a tiny Qwen3.

Run on a CUDA machine with `pytest -m gpu tests/toolkit/test_train_gpu.py -s`; each test prints
the tokens/s and peak memory it measured.
"""

from __future__ import annotations

import json
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
    from toolkit.shapes import build_qwen3

    return build_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3", "tiny", base_model)


def _train(tmp_path: Path, model: Path, backend: str, four_bit: bool):
    import torch

    from toolkit.recipe_loader import load_recipe
    from toolkit.train import train

    data = Path(__file__).resolve().parents[2] / "toolkit" / "demo" / "facts.jsonl"
    path = tmp_path / "recipe.yaml"
    name = f"gpu-{backend}-{'4bit' if four_bit else '16bit'}"
    path.write_text(
        RECIPE.format(name=name, model=model, four_bit=str(four_bit).lower(), data=data)
    )
    torch.cuda.reset_peak_memory_stats()
    result = train(load_recipe(path), backend=backend, progress=False, echo=print)
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    speeds = [row["tokens_per_second"] for row in rows if row.get("tokens_per_second")]
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"\n{name}: {result.steps} steps in {result.seconds:.1f} s, final loss "
        f"{result.final_loss:.4f}, median {sorted(speeds)[len(speeds) // 2]:.0f} tokens/s, "
        f"peak memory {peak:.3f} GiB"
    )
    assert result.backend == backend
    assert result.steps == 20
    assert (result.run_dir / "adapter" / "adapter_config.json").is_file()
    first, last = rows[0]["loss"], result.final_loss
    assert last < first, f"loss did not fall: {first} -> {last}"
    return result


@pytest.mark.parametrize("four_bit", [True, False], ids=["4bit", "16bit"])
def test_unsloth_trains_the_tiny_qwen3(tmp_path: Path, tiny_qwen3: Path, four_bit: bool) -> None:
    pytest.importorskip("unsloth", reason="the unsloth extra is not installed")
    _train(tmp_path, tiny_qwen3, "unsloth", four_bit)


@pytest.mark.parametrize("four_bit", [True, False], ids=["4bit", "16bit"])
def test_hf_trains_the_tiny_qwen3_on_cuda(tmp_path: Path, tiny_qwen3: Path, four_bit: bool) -> None:
    if four_bit:
        pytest.importorskip("bitsandbytes", reason="4-bit needs bitsandbytes")
    _train(tmp_path, tiny_qwen3, "hf", four_bit)
