"""The Unsloth backend (CUDA): FastLanguageModel with every knob of the seed recipe.

unsloth is imported here only: it patches transformers and TRL when imported, so it must come
before them, and importing it on a machine without a GPU fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolkit.base_models.prequantized import is_prequantized_4bit
from toolkit.recipe.schema import Recipe
from toolkit.train.checkpointing import activation_bytes, choose_checkpointing, free_gpu_bytes


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
    checkpointing = resolve_checkpointing(recipe, model.config)
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.r,
        target_modules=list(lora.target_modules),
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        bias=lora.bias,
        use_gradient_checkpointing=checkpointing,
        random_state=lora.random_state,
        use_rslora=lora.use_rslora,
        loftq_config=lora.loftq_config,
        max_seq_length=model_cfg.max_seq_length,
    )
    return model, tokenizer


def resolve_checkpointing(recipe: Recipe, config: Any) -> bool | str:
    """`auto` becomes recompute or offload from the memory the loaded model left free; the
    choice is printed, since it decides both speed and peak memory."""
    setting = recipe.lora.use_gradient_checkpointing
    if setting != "auto":
        return setting
    micro_batch = recipe.train.per_device_train_batch_size
    activations = activation_bytes(config, micro_batch, recipe.model.max_seq_length)
    choice = choose_checkpointing(setting, activations, free_gpu_bytes(), config.hidden_size)
    if os.environ.get("RANK", "0") == "0":  # every torchrun rank decides the same
        import torch

        loaded = torch.cuda.memory_allocated() / 2**30
        print(f"checkpointing: {choice.reason}; the model takes {loaded:.1f} GiB", flush=True)
    return choice.value


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
