"""Training speed settings: `use_gradient_checkpointing: auto` and the notes on recipe values
that cost speed (what they would gain is measured in benchmarks/results/seed_scale.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.qwen3_shapes import SHAPES
from toolkit.recipe.schema import Recipe
from toolkit.train.checkpointing import GIB, activation_bytes, choose_checkpointing
from toolkit.train.speed_notes import packing_note, padded_fill, recipe_notes


def qwen3(shape: str) -> SimpleNamespace:
    dims = SHAPES[shape]
    return SimpleNamespace(
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_hidden_layers,
    )


def test_checkpointed_inputs_are_layers_times_tokens_times_hidden_in_bf16():
    activations = activation_bytes(qwen3("14b"), micro_batch=2, seq_len=4096)
    assert activations.kept == 40 * 2 * 4096 * 5120 * 2  # 3.1 GiB for seed 004 on Qwen3-14B
    assert 1 * GIB < activations.working < 4 * GIB
    assert activation_bytes(qwen3("14b"), 4, 4096).total == 2 * activations.total


@pytest.mark.parametrize(
    ("free_gib", "expected"),
    [(120, True), (24 - 10.5, True), (16 - 10.5, "unsloth"), (2, "unsloth")],
    ids=["h200", "24gb-card", "16gb-card", "nearly-full"],
)
def test_auto_recomputes_when_activations_fit_and_offloads_when_not(free_gib, expected):
    activations = activation_bytes(qwen3("14b"), micro_batch=2, seq_len=4096)
    choice = choose_checkpointing("auto", activations, int(free_gib * GIB))
    assert choice.value == expected
    assert ("recompute" if expected is True else "offload") in choice.reason


@pytest.mark.parametrize("setting", [True, False, "unsloth"])
def test_a_setting_the_user_wrote_is_kept(setting):
    activations = activation_bytes(qwen3("8b"), micro_batch=2, seq_len=2048)
    assert choose_checkpointing(setting, activations, 0).value == setting
    assert choose_checkpointing(setting, activations, 10**15).value == setting


def test_auto_is_the_default_and_loads_from_a_recipe():
    assert Recipe().lora.use_gradient_checkpointing == "auto"
    assert (
        Recipe(lora={"use_gradient_checkpointing": "unsloth"}).lora.use_gradient_checkpointing
        == "unsloth"
    )


def test_dropout_is_named_as_a_speed_cost_on_unsloth_only():
    seed_004 = Recipe(lora={"r": 16, "lora_alpha": 16, "lora_dropout": 0.05})
    (note,) = recipe_notes(seed_004, "unsloth")
    assert "lora.lora_dropout 0.05" in note and "0 trains faster" in note
    assert recipe_notes(seed_004, "hf") == []  # PEFT's path is the same either way
    assert recipe_notes(Recipe(), "unsloth") == []


def test_padded_fill_counts_real_tokens_over_padded_slots():
    assert padded_fill([100, 100, 100, 100], micro_batch=2) == 1.0
    assert padded_fill([100, 300], micro_batch=2) == pytest.approx(400 / 600)
    assert padded_fill([100, 300], micro_batch=1) == 1.0
    assert padded_fill([], micro_batch=2) == 1.0


def test_packing_note_appears_only_when_padding_wastes_a_large_part():
    recipe = Recipe(train={"per_device_train_batch_size": 2})
    varied = [50, 2000] * 50  # a short and a long row in most batches
    note = packing_note(recipe, varied)
    assert note is not None and "packing: true" in note and "x the useful tokens" in note
    assert packing_note(recipe, [512] * 100) is None
    assert packing_note(Recipe(train={"packing": True}), varied) is None
    assert packing_note(Recipe(train={"per_device_train_batch_size": 1}), varied) is None
