"""Data: every format from a fixture file, auto-detection, bad rows by line, mixing, splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.errors import TuneserveError
from toolkit.data import load_source, prepare_data
from toolkit.data.formats import detect_format, split_thinking
from toolkit.data.mixing import mix_sources
from toolkit.recipe.schema import DataSection

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str, fmt: str = "auto", mode=None, on_error: str = "fail"):
    return load_source(FIXTURES / name, fmt, mode, on_error, Path(name).stem)


@pytest.mark.parametrize(
    ("name", "detected", "first_user", "first_reply"),
    [
        ("messages.jsonl", "messages", "Hi", "Hello!"),
        ("sharegpt.jsonl", "sharegpt", "Hi", "Hello!"),
        ("sharegpt.parquet", "sharegpt", "Q", "A"),
        ("alpaca.jsonl", "alpaca", "Translate to French\n\ncat", "chat"),
        ("alpaca.json", "alpaca", "Say yes", "yes"),
        ("alpaca.csv", "alpaca", "Say no", "no"),
        ("problem_solution.jsonl", "problem_solution", "Solve (x + 2)^2 = 0.", "-2"),
    ],
)
def test_each_format_loads_and_is_detected(name, detected, first_user, first_reply):
    examples, report = load(name)
    assert report.format == detected
    first = examples[0]["messages"]
    assert next(m["content"] for m in first if m["role"] == "user") == first_user
    assert next(m["content"] for m in first if m["role"] == "assistant") == first_reply


def test_text_rows_train_on_the_whole_text():
    examples, report = load("text.jsonl")
    assert report.format == "text"
    assert examples[0]["messages"] == [{"role": "assistant", "content": "Once upon a time."}]


def test_reasoning_becomes_thinking_mode():
    examples, _ = load("messages.jsonl")
    assert examples[0]["mode"] == "chat" and examples[1]["mode"] == "thinking"
    assert examples[1]["messages"][-1]["reasoning_content"] == "two and two"
    sharegpt, _ = load("sharegpt.jsonl")
    reply = sharegpt[1]["messages"][-1]
    assert (reply["content"], reply["reasoning_content"]) == ("Goodbye!", "they leave")


def test_problem_solution_keeps_the_solution_as_thinking():
    examples, _ = load("problem_solution.jsonl")
    first, second = (e["messages"][-1] for e in examples)
    assert first["reasoning_content"].startswith("Expand: x+2=0") and first["content"] == "-2"
    assert (second["reasoning_content"], second["content"]) == ("one plus one", "2")
    assert {e["mode"] for e in examples} == {"thinking"}


def test_a_chat_source_drops_reasoning():
    examples, _ = load("messages.jsonl", mode="chat")
    assert all("reasoning_content" not in m for e in examples for m in e["messages"])


def test_bad_rows_are_reported_by_file_and_line():
    with pytest.raises(TuneserveError) as caught:
        load("bad.jsonl")
    message = caught.value.message
    assert message.startswith("3 bad row(s)")
    assert "bad.jsonl:1: the conversation has no assistant turn" in message
    assert "bad.jsonl:2: not valid JSON" in message
    assert "bad.jsonl:3: message 0 has role 'wizard'" in message
    assert "on_error: skip" in caught.value.hint


def test_skip_keeps_the_good_rows_and_counts_the_bad():
    examples, report = load("bad.jsonl", on_error="skip")
    assert len(examples) == 1 and len(report.bad) == 3


def test_empty_file_and_unknown_format(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TuneserveError, match="empty"):
        load_source(empty, "auto", None, "fail", "empty")
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"question": "x"}\n')
    with pytest.raises(TuneserveError, match="odd.jsonl:1: cannot tell the format"):
        load_source(odd, "auto", None, "fail", "odd")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think>b", ("a", "b")),
        ("  <think>\nlong\n</think>\n\nanswer", ("long", "answer")),
        ("no think", (None, "no think")),
        ("<think></think>x", ("", "x")),
    ],
)
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


def test_detect_format_rejects_non_objects():
    with pytest.raises(ValueError, match="JSON object"):
        detect_format(["a", "list"])


def rows(label: str, n: int) -> list[dict]:
    return [{"source": label, "i": i} for i in range(n)]


def test_mix_ratio_holds_within_two_percent_on_1000_rows():
    sources = {"reasoning": rows("reasoning", 750), "chat": rows("chat", 2000)}
    mixed = mix_sources(sources, mix={"reasoning": 0.75, "chat": 0.25}, weights={}, seed=42)
    assert len(mixed) == 1000
    share = sum(r["source"] == "reasoning" for r in mixed) / len(mixed)
    assert abs(share - 0.75) <= 0.02


def test_weights_repeat_sources_and_shuffle_is_seeded():
    sources = {"a": rows("a", 10), "b": rows("b", 10)}
    mixed = mix_sources(sources, mix=None, weights={"a": 2.0, "b": 0.5}, seed=1)
    assert sum(r["source"] == "a" for r in mixed) == 20
    assert sum(r["source"] == "b" for r in mixed) == 5
    again = mix_sources(sources, mix=None, weights={"a": 2.0, "b": 0.5}, seed=1)
    assert mixed == again != mix_sources(sources, mix=None, weights={"a": 2.0, "b": 0.5}, seed=2)


def test_prepare_data_holds_out_an_eval_split():
    section = DataSection.model_validate(
        {
            "sources": [str(FIXTURES / "alpaca.jsonl"), str(FIXTURES / "messages.jsonl")],
            "eval_split": 0.5,
        }
    )
    prepared = prepare_data(section)
    assert len(prepared.heldout) == 2 and len(prepared.train) == 2
    held = {m["content"] for e in prepared.heldout for m in e["messages"]}
    trained = {m["content"] for e in prepared.train for m in e["messages"]}
    assert not (held & trained - {"Be brief."})
    assert "2 train, 2 held out" in prepared.describe()
