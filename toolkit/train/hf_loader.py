"""The transformers + PEFT backend: any device, every LoRA knob of the recipe."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from toolkit.base_models.prequantized import is_prequantized_4bit
from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import Recipe


def torch_dtype(name: str, cuda: bool) -> Any:
    import torch

    if name == "auto":
        if not cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def require_bitsandbytes(cuda: bool, what: str, hint: str) -> None:
    import importlib.util

    if not cuda or importlib.util.find_spec("bitsandbytes") is None:
        raise TuneserveError(f"{what} need a CUDA GPU and bitsandbytes", hint)


def quantization_config(recipe: Recipe, cuda: bool, dtype: Any) -> Any:
    model = recipe.model
    if not (model.load_in_4bit or model.load_in_8bit):
        return None
    require_bitsandbytes(
        cuda,
        "model.load_in_4bit/load_in_8bit",
        "set both to false on this machine (LoRA in 16/32-bit), or train on a GPU",
    )
    from transformers import BitsAndBytesConfig

    if model.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


def lora_config(recipe: Recipe) -> Any:
    from peft import LoftQConfig, LoraConfig

    lora = recipe.lora
    init: Any = True
    loftq = None
    if lora.loftq_config:
        init, loftq = "loftq", LoftQConfig(**lora.loftq_config)
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        bias=lora.bias,
        target_modules=list(lora.target_modules),
        use_rslora=lora.use_rslora,
        init_lora_weights=init,
        loftq_config=loftq or {},
        task_type="CAUSAL_LM",
    )


def local_rank() -> int:
    """This process's GPU under torchrun (each rank holds its own copy), 0 otherwise."""
    import os

    return int(os.environ.get("LOCAL_RANK", "0"))


def load_hf(recipe: Recipe, model_path: Path, cuda: bool) -> tuple[Any, Any]:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch_dtype(recipe.model.dtype, cuda)
    # A folder saved in 4-bit (unsloth/...-bnb-4bit) brings its own quantization config.
    prequantized = is_prequantized_4bit(model_path)
    if prequantized:
        require_bitsandbytes(
            cuda,
            f"{recipe.model.name} is saved in 4-bit (bitsandbytes): its weights",
            "train it on a GPU, or name its 16-bit original (e.g. Qwen/Qwen3-8B, not "
            "unsloth/Qwen3-8B-bnb-4bit) in model.name",
        )
    quant = None if prequantized else quantization_config(recipe, cuda, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # quantization_config only when there is one: an explicit None is applied to the config and
    # erases a 4-bit folder's own (it then loaded its packed weights as 16-bit ones).
    quantized = {"quantization_config": quant} if quant is not None else {}
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, device_map={"": local_rank()} if cuda else None, **quantized
    )
    checkpointing = bool(recipe.lora.use_gradient_checkpointing)
    if quant is not None or prequantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    if recipe.model.full_finetuning:
        return model, tokenizer
    # random_state seeds the LoRA initialisation, as in Unsloth's get_peft_model.
    torch.manual_seed(recipe.lora.random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(model, lora_config(recipe))
    if checkpointing:
        model.enable_input_require_grads()
    return model, tokenizer
