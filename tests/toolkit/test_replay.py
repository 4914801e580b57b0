"""Replay: a prompt pool disjoint from the guard (by text), the mixing ratio, the recipe keys,
and the base's answers generated once through a real llama.cpp engine and then cached."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from evals.suite import resolve_suite
from toolkit.core.errors import TuneserveError
from toolkit.data.replay import (
    Endpoint,
    add_replay,
    ensure_replay,
    leaks,
    load_prompts,
    mix_replay,
    replay_count,
    same_prompt,
)
from toolkit.recipe.loader import load_recipe
from toolkit.recipe.schema import ReplaySection


def guard_prompts() -> list[str]:
    return [item.messages[-1]["content"] for item in resolve_suite("guard", None).items]


def test_builtin_pool_covers_the_guard_kinds_without_any_of_its_items():
    pool = [messages[-1]["content"] for messages in load_prompts("builtin")]
    assert len(pool) >= 100
    assert leaks(pool, guard_prompts()) == []
    for kind in ("Reply with the number only", "uppercase", "Repeat this word", "one per line"):
        assert any(kind in prompt for prompt in pool), kind
    for kind in ("Answer yes or no", "Answer with the letter", "JSON object"):
        assert any(kind in prompt for prompt in pool), kind


@pytest.mark.parametrize(
    "variant",
    [
        "what is 15 + 18? reply with the number only",  # case and punctuation
        "What is 18 + 15? Reply with the number only.",  # operands swapped
        "Please help. What is 15 + 18? Reply with the number only. Thanks!",  # wrapped
    ],
)
def test_a_guard_item_reworded_into_the_pool_is_caught(variant):
    guard = guard_prompts()
    assert "What is 15 + 18? Reply with the number only." in guard
    assert leaks([variant], guard)


def test_templated_prompts_about_other_things_are_not_leaks():
    assert not same_prompt("What do you call a baby cat?", "What do you call a baby dog?")
    assert not same_prompt(
        "Repeat this word exactly once and nothing else: copper",
        "Repeat this word exactly once and nothing else: apple",
    )


def test_replay_makes_its_share_of_the_training_rows():
    train = [{"messages": [], "mode": "chat", "task": i} for i in range(200)]
    pool = [{"messages": [], "mode": "chat", "replay": i} for i in range(50)]
    mixed = mix_replay(train, pool, 0.25, seed=1)
    assert replay_count(200, 0.25) == 67 and len(mixed) == 267
    assert sum("replay" in row for row in mixed) == 67  # the 50 rows, 17 of them twice
    assert mixed == mix_replay(train, pool, 0.25, seed=1)  # the same rows in the same order
    assert mix_replay(train, pool, 0.0, seed=1) == train


def test_recipe_takes_a_bare_ratio_and_names_bad_keys(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  sources: [{data}]\n  replay: 0.3\n")
    assert load_recipe(recipe).data.replay.ratio == 0.3
    recipe.write_text(f"data:\n  sources: [{data}]\n  replay:\n    ratoi: 0.3\n")
    with pytest.raises(TuneserveError) as caught:
        load_recipe(recipe)
    assert "data.replay.ratoi" in caught.value.message


def test_training_without_the_generated_rows_says_how_to_make_them(tmp_path):
    with pytest.raises(TuneserveError) as caught:
        add_replay([], ReplaySection(ratio=0.2), tmp_path / "replay.jsonl", 0)
    assert "was not generated" in caught.value.message


@pytest.mark.slow
def test_base_answers_once_through_the_engine_then_from_the_cache(base_gguf, tmp_path, monkeypatch):
    from serve.launcher import serve_models

    monkeypatch.setenv("TUNESERVE_BASE_DIR", str(tmp_path / "base"))  # an empty replay cache
    prompts = tmp_path / "prompts.jsonl"
    questions = [
        "What is 2 + 3? Reply with the number only.",
        "What is 7 + 1? Reply with the number only.",
    ]
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    config = ReplaySection(ratio=0.5, prompts=str(prompts), max_tokens=96)
    started = []

    @contextmanager
    def serve_base():
        started.append(True)
        with serve_models([f"base={base_gguf}"], engine="llamacpp") as served:
            yield Endpoint(served.base_url, "base", served.api_key)

    first = ensure_replay(config, "smol-q4_1", serve_base, echo=lambda _: None)
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert [row["messages"][0]["content"] for row in rows] == questions
    assert all(row["messages"][-1]["role"] == "assistant" for row in rows)
    assert all(row["messages"][-1]["content"] and row["mode"] == "chat" for row in rows)
    again = ensure_replay(config, "smol-q4_1", serve_base, echo=lambda _: None)
    assert again == first and len(started) == 1  # cached: no engine the second time
    other = ensure_replay(config, "another-base", serve_base, echo=lambda _: None)
    assert other != first and len(started) == 2  # another base answers for itself
    # greedy: the same base answers the same way on every run
    assert other.read_text() == first.read_text()
    train = [{"messages": [], "mode": "chat"}] * 4
    assert add_replay(train, config, first, seed=0) == 4 and len(train) == 8
