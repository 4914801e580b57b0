"""Merge a LoRA adapter into its base: 16-bit safetensors that `vllm serve DIR` loads as is.

The folder also carries the tokenizer with the serving chat template and a generation_config.json
holding the default mode's sampling from serve/modes.py, so the model samples the same anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.artifacts import atomic_dir
from toolkit.errors import TuneserveError

DTYPES = {"bfloat16", "float16", "float32"}


def base_of(adapter: Path) -> str:
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise TuneserveError(
            f"{adapter} is not a LoRA adapter folder (no adapter_config.json)",
            "point at models/runs/<run>/adapter",
        )
    return json.loads(config.read_text())["base_model_name_or_path"]


def load_merged(base: Path, adapter: Path, dtype: Any = None) -> Any:
    """base + adapter merged in fp32 (the reference for parity checks), optionally cast."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return merged.to(dtype) if dtype is not None else merged


def sampling_generation_config(model: Any, chat_template: str | None) -> Any:
    from transformers import GenerationConfig

    from serve.modes import SAMPLING, default_mode

    sampling = SAMPLING[default_mode(chat_template)]
    config = model.generation_config or GenerationConfig()
    config.do_sample = True
    config.temperature = sampling.temperature
    config.top_p = sampling.top_p
    config.top_k = sampling.top_k
    config.min_p = sampling.min_p
    return config


def merge_adapter(base: Path, adapter: Path, out: Path, dtype: str = "bfloat16") -> Path:
    import torch
    from transformers import AutoTokenizer

    if dtype not in DTYPES:
        raise TuneserveError(f"unknown dtype {dtype!r}", f"use one of {sorted(DTYPES)}")
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    merged = load_merged(base, adapter, getattr(torch, dtype))
    merged.generation_config = sampling_generation_config(merged, tokenizer.chat_template)
    merged.config.dtype = getattr(torch, dtype)
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True, max_shard_size="5GB")
        tokenizer.save_pretrained(tmp)
    return out
