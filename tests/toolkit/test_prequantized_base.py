"""A base saved in 4-bit (Unsloth's `unsloth/...-bnb-4bit` repos): where its weights cannot be
had in 16-bit (no CUDA GPU with bitsandbytes), training and merged16 say so in one line.
The GPU side (it trains, and merges into plain 16-bit) is in test_train_gpu.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from toolkit.core.errors import TuneserveError
from toolkit.recipe.loader import load_recipe

BNB_4BIT = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


@pytest.fixture
def four_bit_base(tmp_path: Path, base_model: Path) -> Path:
    """The base's config and tokenizer with a bitsandbytes 4-bit quantization config."""
    folder = tmp_path / "smollm2-bnb-4bit"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base_model / name, folder / name)
    config = json.loads((base_model / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": BNB_4BIT}))
    return folder


def test_merged16_of_a_4bit_base_without_a_gpu_says_what_to_do(four_bit_base, tmp_path):
    from toolkit.export.merge import load_merged

    with pytest.raises(TuneserveError) as caught:
        load_merged(four_bit_base, tmp_path / "adapter")
    assert "saved in 4-bit" in caught.value.message and str(four_bit_base) in caught.value.message
    assert "16-bit original" in caught.value.hint


def test_training_a_4bit_base_without_a_gpu_says_what_to_do(four_bit_base):
    from toolkit.train.hf_loader import load_hf

    recipe = load_recipe(None, [f"model.name={four_bit_base}"])
    with pytest.raises(TuneserveError) as caught:
        load_hf(recipe, four_bit_base, cuda=False)
    assert "saved in 4-bit" in caught.value.message and "CUDA GPU" in caught.value.message
    assert "16-bit original" in caught.value.hint
