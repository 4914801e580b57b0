"""Each scorer with passing and failing cases, and suite validation with file:line errors."""

from __future__ import annotations

import json

import pytest

from evals.compare import bootstrap_ci, mcnemar_exact, paired_stats
from evals.gate import regressions
from evals.scorers import resolve_scorer
from evals.suite import load_suite_file, resolve_suite
from toolkit.core.errors import TuneserveError

SCHEMA = {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}

CASES = [
    ("exact", "Paris", "Paris", 1.0),
    ("exact", "paris", "Paris", 0.0),
    ("normalized", "  The Paris! ", "paris", 1.0),
    ("normalized", "Lyon", "Paris", 0.0),
    ("contains", "I think it is Paris, France.", "paris", 1.0),
    ("contains", "It is 7.", ["seven", "7"], 1.0),
    ("contains", "London", ["Paris"], 0.0),
    ("regex", "yes, of course", r"^\W*yes\b", 1.0),
    ("regex", "no", r"^\W*yes\b", 0.0),
    ("choice", "B) apple", "B", 1.0),
    ("choice", "The answer is A", "B", 0.0),
    ("number", "The result is 1,234.", 1234, 1.0),
    ("number", "3.14159", {"value": 3.14, "tolerance": 0.01}, 1.0),
    ("number", "12 then 13", 12, 0.0),
    ("number", "no digits", 5, 0.0),
    ("json_schema", '```json\n{"age": 30}\n```', SCHEMA, 1.0),
    ("json_schema", 'Sure: {"age": "thirty"}', SCHEMA, 0.0),
    ("json_schema", "not json", SCHEMA, 0.0),
    ("similarity", "Capital: Paris.", "Capital: Paris.", 1.0),
    ("similarity", "Berlin", "Capital: Paris.", 0.0),
]


@pytest.mark.parametrize(("scorer", "output", "expected", "score"), CASES)
def test_scorers(scorer, output, expected, score):
    assert resolve_scorer(scorer)(output, expected) == pytest.approx(score)


def test_custom_module_function_scorer():
    assert resolve_scorer("evals.scorers:exact")("a", "a") == 1.0
    with pytest.raises(TuneserveError, match="cannot be imported"):
        resolve_scorer("evals.scorers:nope")


def test_bad_suite_lines_are_named(tmp_path):
    path = tmp_path / "suite.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "hi"}], "expected": "x"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "b", "scorer": "magic"}),
        json.dumps({**good, "id": "c", "messages": [{"role": "wizard", "content": "x"}]}),
        json.dumps(good),
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TuneserveError) as caught:
        load_suite_file(path)
    message = caught.value.message
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:3: scorer: unknown scorer 'magic'" in message
    assert f"{path}:4: messages: message 0 has role 'wizard'" in message
    assert f"{path}:5: id: duplicate id 'a'" in message


def test_guard_suite_is_large_and_varied():
    suite = resolve_suite("guard", None)
    assert len(suite.items) >= 100
    kinds = {item.id.split("-")[0] for item in suite.items}
    assert {"math", "fact", "follow", "json"} <= kinds
    assert len({item.scorer for item in suite.items}) >= 5


def test_statistics():
    low, high = bootstrap_ci([1.0] * 50 + [0.0] * 50)
    assert low < 0.5 < high and high - low < 0.3
    assert mcnemar_exact(10, 0) < 0.01 and mcnemar_exact(5, 5) == 1.0
    pair = paired_stats("s", "base", "tuned", [0, 0, 1, 1], [1, 1, 1, 0])
    assert (pair.wins, pair.losses, pair.ties, pair.delta) == (2, 1, 1, 0.25)


def test_gate_against_first_model_and_a_saved_baseline():
    pair = {"suite": "guard", "model": "tuned", "baseline": "base", "delta": -0.2}
    report = {
        "comparisons": [{**pair, "delta_ci": [-0.28, -0.12]}],
        "models": [{"suite": "guard", "model": "tuned", "score": 0.5}],
    }
    # non-inferiority: the interval's lower bound, not the point delta, meets the threshold
    assert regressions(report, 0.1) and regressions(report, 0.25) and not regressions(report, 0.3)
    saved = {"models": [{"suite": "guard", "model": "tuned", "score": 0.7}]}
    assert regressions(report, 0.1, saved) and not regressions(report, 0.25, saved)
