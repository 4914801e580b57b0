"""The export's disk check asks for what the chosen formats write: a 14B merged16 export with
34.5 GiB free was refused for "about 41.3 GiB" it did not need (benchmarks/results/seed_scale.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.core.errors import TuneserveError
from toolkit.export.run_export import base_parameters, check_disk, export_bytes

QWEN3_14B = 14_768_307_200  # parameters of the 14B shape (bf16 safetensors: 29.5 GB)


def base_folder(
    tmp_path: Path, weight_bytes: int, dtype: str | None, quantized: bool = False
) -> Path:
    config = {"dtype": dtype} if dtype else {}
    if quantized:
        config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with open(tmp_path / "model.safetensors", "wb") as handle:
        handle.truncate(weight_bytes)  # sparse: the size is what is read
    return tmp_path


@pytest.mark.parametrize(
    ("dtype", "bytes_per_param"), [("bfloat16", 2), ("float16", 2), ("float32", 4), (None, 4)]
)
def test_parameters_come_from_the_weights_and_their_dtype(tmp_path, dtype, bytes_per_param):
    base = base_folder(tmp_path, 1000 * bytes_per_param, dtype)
    assert base_parameters(base) == 1000


def test_a_4bit_base_counts_two_parameters_a_byte(tmp_path):
    assert base_parameters(base_folder(tmp_path, 500, "bfloat16", quantized=True)) == 1000


def test_merged16_alone_needs_two_bytes_a_parameter():
    assert export_bytes(QWEN3_14B, ["lora", "merged16"], ["q4_k_m"]) == 2 * QWEN3_14B


def test_gguf_adds_the_f16_source_and_each_quant():
    with_q4 = export_bytes(QWEN3_14B, ["merged16", "gguf"], ["q4_k_m"])
    assert with_q4 == int(QWEN3_14B * (2 + 2 + 1.1))
    assert export_bytes(QWEN3_14B, ["gguf"], ["f16"]) == 4 * QWEN3_14B  # f16 is made once
    two = export_bytes(QWEN3_14B, ["gguf"], ["q4_k_m", "q8_0"])
    assert two == int(QWEN3_14B * (2 + 2 + 2 * 1.1))


def test_a_14b_merged16_export_fits_where_it_did_not_before(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    (tmp_path / "base").mkdir()
    base = base_folder(tmp_path / "base", 2 * QWEN3_14B, "bfloat16")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(0, 0, int(34.5 * 2**30)))
    check_disk(tmp_path, base, ["lora", "merged16"], [])  # 27.5 GiB in 34.5 GiB free
    with pytest.raises(TuneserveError, match=r"only 34\.5 GiB free .* needs about 70\.1 GiB"):
        check_disk(tmp_path, base, ["merged16", "gguf"], ["q4_k_m"])
