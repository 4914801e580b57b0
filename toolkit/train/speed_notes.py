"""Recipe values that cost training speed, said once before training with what changing them
would gain. Nothing is changed for the user: each is a trade they may want (dropout
regularises; packing changes what a batch holds).

The figures are measured on the seeds' own recipes (`benchmarks/results/seed_scale.md`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from toolkit.recipe.schema import Recipe

# Unsloth's fused LoRA kernels (QKV, O, MLP) run only when lora_dropout is 0; otherwise each
# projection goes through PEFT's plain path. Measured on the 14B shape, seed 004's recipe.
DROPOUT_SLOWDOWN = "{dropout_cost}"
# Below this share of real tokens in the padded batches, packing is worth saying.
PACKING_NOTE_BELOW = 0.75


def recipe_notes(recipe: Recipe, backend: str) -> list[str]:
    """What the recipe alone says (before the data is tokenized)."""
    notes = []
    if backend == "unsloth" and recipe.lora.lora_dropout > 0 and not recipe.model.full_finetuning:
        notes.append(
            f"lora.lora_dropout {recipe.lora.lora_dropout:g} keeps Unsloth off its fused LoRA "
            f"kernels ({DROPOUT_SLOWDOWN} slower on Qwen3-14B in seed_scale.md); 0 trains faster"
        )
    return notes


def padded_fill(lengths: Sequence[int], micro_batch: int, seed: int = 0) -> float:
    """The share of real tokens in micro-batches padded to their longest row, with rows drawn
    in a shuffled order as the Trainer draws them."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    real = slots = 0
    for start in range(0, len(order), micro_batch):
        batch = order[start : start + micro_batch]
        real += sum(batch)
        slots += max(batch) * len(batch)
    return real / slots if slots else 1.0


def packing_note(recipe: Recipe, lengths: Sequence[int]) -> str | None:
    """Said when packing is off and padding wastes a large part of every batch."""
    if recipe.train.packing or recipe.train.per_device_train_batch_size < 2:
        return None
    fill = padded_fill(lengths, recipe.train.per_device_train_batch_size, recipe.train.seed)
    if fill >= PACKING_NOTE_BELOW:
        return None
    return (
        f"train.packing is off and rows fill {fill:.0%} of their padded batches; packing: true "
        f"fills them (up to {1 / fill:.1f}x the useful tokens per second)"
    )
