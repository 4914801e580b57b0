"""Recipe values that cost training speed, said once before training with what changing them
would gain. Nothing is changed for the user: each is a trade they may want (dropout
regularises; packing changes what a batch holds).

The figures are measured on the seeds' own recipes (`benchmarks/results/seed_scale.md`).
"""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.recipe.schema import Recipe

# Unsloth's fused LoRA kernels (QKV, O, MLP) run only when lora_dropout is 0; otherwise each
# projection goes through PEFT's plain path. Measured on the 14B shape, seed 004's recipe.
# 14B, 8 steps each (`seed_scale.sh train 004-as-written 004-dropout0 004-packing 004-tuned`):
# 2,657 vs 3,405 tokens/s on padded rows (22% lost), 5,186 vs 5,451 packed (5%).
DROPOUT_SLOWDOWN = "up to 22%"
# Rows shorter on average than this share of max_seq_length make packing worth saying.
PACKING_NOTE_BELOW = 0.5
# 14B: 2,657 tokens/s unpacked vs 5,186 packed, seed 004 otherwise as written.
PACKING_GAIN = "1.95x"


def recipe_notes(recipe: Recipe, backend: str) -> list[str]:
    """What the recipe alone says (before the data is tokenized)."""
    notes = []
    if backend == "unsloth" and recipe.lora.lora_dropout > 0 and not recipe.model.full_finetuning:
        notes.append(
            f"lora.lora_dropout {recipe.lora.lora_dropout:g} keeps Unsloth off its fused LoRA "
            f"kernels ({DROPOUT_SLOWDOWN} of the speed on Qwen3-14B, seed_scale.md); 0 trains faster"
        )
    return notes


def packing_note(recipe: Recipe, lengths: Sequence[int]) -> str | None:
    """Said when packing is off and rows are short against max_seq_length: each micro-batch
    then holds far fewer tokens than it could (Unsloth removes the padding by itself, but a
    step of short rows still leaves the GPU's matmuls small)."""
    if recipe.train.packing or not lengths:
        return None
    longest = recipe.model.max_seq_length
    mean = sum(min(n, longest) for n in lengths) / len(lengths)
    if mean >= PACKING_NOTE_BELOW * longest:
        return None
    return (
        f"train.packing is off and rows average {mean:.0f} tokens of max_seq_length {longest}; "
        f"packing: true fills each row ({longest / mean:.1f}x the tokens a step, as many times "
        f"fewer optimizer steps an epoch; {PACKING_GAIN} the tokens/s on Qwen3-14B, seed_scale.md)"
    )
