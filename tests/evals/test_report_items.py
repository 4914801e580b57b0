"""report.json's `items`: per item what was asked and expected, and each model's answer and score."""

from __future__ import annotations

from evals.api import score_answers
from evals.report import item_records
from evals.runner import Answer
from evals.suite import Item, Suite


def answer(model: str, item: str, output: str, error: str | None = None) -> Answer:
    return Answer(model, "facts", item, output, None, 0.1, 3, error)


def test_each_item_carries_both_answers_their_scores_and_the_expected_one():
    suite = Suite(
        name="facts",
        items=[
            Item(
                id="a",
                messages=[{"role": "user", "content": "Capital of France?"}],
                expected="Paris",
            ),
            Item(
                id="b",
                messages=[{"role": "user", "content": "2+2?"}],
                expected=4,
                scorer="number",
            ),
        ],
    )
    answers = [
        answer("base", "a", "Paris"),
        answer("base", "b", "five"),
        answer("tuned", "a", "Lyon"),
        answer("tuned", "b", "", error="APITimeoutError: timed out"),
    ]
    records = item_records([suite], ["base", "tuned"], answers, score_answers([suite], answers))
    assert [(r["suite"], r["id"], r["scorer"], r["expected"]) for r in records] == [
        ("facts", "a", "normalized", "Paris"),
        ("facts", "b", "number", 4),
    ]
    first, second = records
    assert first["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert first["answers"]["base"] == {
        "output": "Paris",
        "reasoning": None,
        "score": 1.0,
        "error": None,
    }
    assert first["answers"]["tuned"]["output"] == "Lyon"
    assert first["answers"]["tuned"]["score"] == 0.0  # passed by base, failed by tuned
    assert second["answers"]["tuned"] == {
        "output": "",
        "reasoning": None,
        "score": 0.0,
        "error": "APITimeoutError: timed out",
    }
