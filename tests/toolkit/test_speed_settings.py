"""Training speed settings: `use_gradient_checkpointing: auto` and the notes on recipe values
that cost speed (what they would gain is measured in benchmarks/results/seed_scale.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.qwen3_shapes import SHAPES
from toolkit.recipe.schema import Recipe
from toolkit.train.checkpointing import GIB, activation_bytes, choose_checkpointing
from toolkit.train.speed_notes import packing_note, recipe_notes


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
    [(120, True), (24 - 3.5, True), (1.5, "unsloth"), (0.5, "unsloth")],
    ids=["h200", "24gb-card", "1.5gib-free", "nearly-full"],
)
def test_auto_recomputes_a_narrow_model_when_activations_fit(free_gib, expected):
    """Qwen3-1.7B at seq 4096: recompute measured 17% faster than offload where it fits."""
    activations = activation_bytes(qwen3("1.7b"), micro_batch=2, seq_len=4096)
    choice = choose_checkpointing("auto", activations, int(free_gib * GIB), hidden_size=2048)
    assert choice.value == expected
    assert ("recompute" if expected is True else "offload") in choice.reason


@pytest.mark.parametrize("shape", ["8b", "14b"])
def test_auto_offloads_a_wide_model_even_when_activations_fit(shape):
    """Qwen3-14B: offload as fast as recompute (5,543 vs 5,451 tokens/s) and 2.8 GiB lighter."""
    activations = activation_bytes(qwen3(shape), micro_batch=2, seq_len=4096)
    hidden = SHAPES[shape].hidden_size
    choice = choose_checkpointing("auto", activations, 120 * GIB, hidden_size=hidden)
    assert choice.value == "unsloth"
    assert f"hidden size {hidden}" in choice.reason


@pytest.mark.parametrize("setting", [True, False, "unsloth"])
def test_a_setting_the_user_wrote_is_kept(setting):
    activations = activation_bytes(qwen3("8b"), micro_batch=2, seq_len=2048)
    assert choose_checkpointing(setting, activations, 0, 1024).value == setting
    assert choose_checkpointing(setting, activations, 10**15, 8192).value == setting


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


def test_packing_note_appears_only_when_rows_are_short_against_the_context():
    recipe = Recipe(model={"max_seq_length": 4096})
    note = packing_note(recipe, [900, 1000, 1100] * 30)
    assert note is not None and "average 1000 tokens of max_seq_length 4096" in note
    assert "packing: true" in note and "4.1x the tokens a step" in note
    assert packing_note(recipe, [3000, 2500]) is None  # rows already fill most of a row
    assert packing_note(recipe, [9000, 8000]) is None  # cut at max_seq_length: full rows
    assert (
        packing_note(Recipe(model={"max_seq_length": 4096}, train={"packing": True}), [900]) is None
    )
    assert packing_note(recipe, []) is None
