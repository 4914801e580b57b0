"""The Unsloth backend (CUDA): FastLanguageModel with every knob of the seed recipe.

unsloth is imported here only: it patches transformers and TRL when imported, so it must come
before them, and importing it on a machine without a GPU fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.base_models.prequantized import is_prequantized_4bit
from toolkit.recipe.schema import Recipe


def load_unsloth(recipe: Recipe, model_path: Path) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel  # noqa: I001  (must precede transformers/trl use)

    model_cfg, lora = recipe.model, recipe.lora
    dtype = None if model_cfg.dtype == "auto" else _torch_dtype(model_cfg.dtype)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_path),
        max_seq_length=model_cfg.max_seq_length,
        dtype=dtype,
        # a folder saved in 4-bit (unsloth/...-bnb-4bit) loads in 4-bit whatever the recipe says
        load_in_4bit=model_cfg.load_in_4bit or is_prequantized_4bit(model_path),
        load_in_8bit=model_cfg.load_in_8bit,
        full_finetuning=model_cfg.full_finetuning,
        local_files_only=True,
    )
    if model_cfg.full_finetuning:
        return model, tokenizer
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.r,
        target_modules=list(lora.target_modules),
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        bias=lora.bias,
        use_gradient_checkpointing=lora.use_gradient_checkpointing,
        random_state=lora.random_state,
        use_rslora=lora.use_rslora,
        loftq_config=lora.loftq_config,
        max_seq_length=model_cfg.max_seq_length,
    )
    return model, tokenizer


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
