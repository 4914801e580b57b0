"""Merge a LoRA adapter into its base: 16-bit safetensors that `vllm serve DIR` loads as is.

The folder also carries the tokenizer with the serving chat template and a generation_config.json
holding the default mode's sampling from toolkit/core/modes.py, so the model samples the same anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.base_models.prequantized import is_prequantized_4bit
from toolkit.core.artifacts import atomic_dir
from toolkit.core.errors import TuneserveError
from toolkit.core.modes import SAMPLING, default_mode

DTYPES = {"bfloat16", "float16", "float32"}


def base_of(adapter: Path) -> str:
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise TuneserveError(
            f"{adapter} is not a LoRA adapter folder (no adapter_config.json)",
            "point at models/runs/<run>/adapter",
        )
    return json.loads(config.read_text())["base_model_name_or_path"]


def load_base(base: Path) -> Any:
    """The base model in fp32 on the CPU: the weights a merge adds the adapter to."""
    import torch
    from transformers import AutoModelForCausalLM

    if is_prequantized_4bit(base):
        return dequantized(base)
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


def dequantized(base: Path) -> Any:
    """A base saved in bitsandbytes 4-bit as 16-bit weights, as Unsloth's merged_16bit makes
    them: loaded on the GPU, each 4-bit Linear dequantized there (bitsandbytes has the kernels),
    and the weights put into a fresh fp32 model on the CPU built from the config without its
    quantization. (transformers' own `model.dequantize()` keeps the quantizer on the model, and
    save_pretrained then wrote a merged folder that claimed to be 4-bit.)"""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise TuneserveError(
            f"merged16 needs 16-bit weights, and the base {base} is saved in 4-bit "
            "(bitsandbytes); dequantizing it needs a CUDA GPU with bitsandbytes",
            "export on the GPU machine, or train from the 16-bit original (e.g. Qwen/Qwen3-8B "
            "rather than unsloth/Qwen3-8B-bnb-4bit)",
        )
    import bitsandbytes as bnb
    from transformers import AutoConfig, AutoModelForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16, device_map={"": 0})
    state = {}
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            state[f"{name}.weight"] = weight.to("cpu", torch.float32)
    config = AutoConfig.from_pretrained(base)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    wanted = set(model.state_dict())
    for name, tensor in quantized.state_dict().items():
        if name not in state and name in wanted and tensor.is_floating_point():
            state[name] = tensor.to("cpu", torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    tied = {name for name in missing if name in getattr(model, "all_tied_weights_keys", {})}
    if set(missing) - tied or unexpected:
        raise TuneserveError(
            f"dequantizing {base}: weights missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}",
            "train from the 16-bit original of this model",
        )
    model.generation_config = quantized.generation_config
    del quantized
    torch.cuda.empty_cache()
    return model


def load_merged(base: Path, adapter: Path, dtype: Any = None) -> Any:
    """base + adapter merged in fp32 (the reference for parity checks), optionally cast."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(load_base(base), adapter).merge_and_unload()
    return merged.to(dtype) if dtype is not None else merged


def sampling_generation_config(model: Any, chat_template: str | None) -> Any:
    from transformers import GenerationConfig

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
