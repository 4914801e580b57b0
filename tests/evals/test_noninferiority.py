"""A measurement that repeats: greedy requests, k samples, the non-inferiority verdict and gate,
suites too small to show anything, and the report lines that say so (pure, no engine)."""

from __future__ import annotations

import json

import pytest

from evals.api import score_answers
from evals.compare import paired_stats, smallest_p
from evals.gate import regressions
from evals.report import as_json, render_markdown
from evals.runner import Answer, request_for
from evals.suite import Item, Suite, load_suite_file
from toolkit.core.errors import TuneserveError

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


def test_scored_items_are_greedy_unless_they_ask_for_sampling():
    greedy = request_for(Item(id="a", messages=QUESTION, expected=4), "base", 32, 7)
    # sent explicitly: a gateway or server fills an unset temperature with its own default
    assert greedy["temperature"] == 0.0 and greedy["seed"] == 7
    sampled = Item(id="b", messages=QUESTION, expected=4, temperature=0.8, k=3)
    requests = [request_for(sampled, "base", 32, 7, sample) for sample in range(sampled.k)]
    assert [r["temperature"] for r in requests] == [0.8] * 3
    assert [r["seed"] for r in requests] == [7, 8, 9]  # each sample its own draw


def test_k_without_a_temperature_is_refused_by_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = [
        {"id": "a", "messages": QUESTION, "expected": 4, "k": 5},
        {"id": "b", "messages": QUESTION, "expected": 4, "k": 5, "temperature": 0.7},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TuneserveError) as caught:
        load_suite_file(path)
    assert f"{path}:1: item: k is 5 but decoding is greedy" in caught.value.message
    assert f"{path}:2" not in caught.value.message


def test_samples_are_averaged_and_the_repeat_pass_kept_apart():
    item = Item(id="a", messages=QUESTION, expected=4, scorer="number", temperature=1.0, k=4)
    suite = Suite(name="s", items=[item])
    outputs = ["4", "5", "4", "4"]
    answers = [
        Answer("m", "s", "a", text, None, 0.1, 1, sample=i) for i, text in enumerate(outputs)
    ]
    answers.append(Answer("m", "s", "a", "7", None, 0.1, 1, repeat=True))
    scores = score_answers([suite], answers)
    assert scores[("s", "m", False)] == {"a": 0.75}
    assert scores[("s", "m", True)] == {"a": 0.0}


def test_non_inferiority_reads_the_interval_not_the_point():
    # 300 items: 15 losses, 12 wins. The point (-0.01) is well inside a 0.05 margin, and so is
    # the interval's lower bound (about -0.044).
    base = [1.0] * 15 + [0.0] * 12 + [1.0] * 100 + [0.0] * 173
    tuned = [0.0] * 15 + [1.0] * 12 + [1.0] * 100 + [0.0] * 173
    close = paired_stats("guard", "base", "tuned", base, tuned, margin=0.05)
    assert close.delta == pytest.approx(-0.01) and close.noninferior
    # 30 items, 3 losses 2 wins: the same kind of point (-0.033) but an interval that cannot
    # rule out a drop of 0.05.
    small = paired_stats(
        "guard", "base", "tuned", base[:3] + [0.0] * 27, [0.0] * 3 + [1, 1] + [0.0] * 25, 0.05
    )
    assert small.delta > -0.05 and not small.noninferior
    same = paired_stats("guard", "base", "again", base, base, margin=0.05)
    assert same.delta_ci == (0.0, 0.0) and same.noninferior and same.p_value == 1.0


def test_a_suite_too_small_to_show_anything_says_so():
    assert smallest_p(2) == 0.5 and smallest_p(6) < 0.05 < smallest_p(5)
    pair = paired_stats("heldout", "base", "tuned", [0.0, 0.0], [1.0, 1.0], margin=0.05)
    assert pair.too_small and pair.p_value == 0.5
    report = as_json([], [pair], {"base_url": "u", "models": ["base", "tuned"], "seed": 0})
    text = render_markdown(report)
    assert "heldout: 2 items cannot show a significant change" in text
    assert "p would be 0.5" in text
    large = paired_stats("guard", "base", "tuned", [0.0] * 10, [1.0] * 10, margin=0.05)
    assert not large.too_small
    assert "cannot show" not in render_markdown(as_json([], [large], report["meta"]))


def test_gate_fails_on_an_interval_reaching_below_the_margin():
    def report(delta: float, low: float) -> dict:
        pair = {"suite": "guard", "model": "tuned", "baseline": "base"}
        return {"comparisons": [{**pair, "delta": delta, "delta_ci": [low, 0.01]}], "models": []}

    # a point delta within the margin does not pass when the interval reaches below it
    assert regressions(report(-0.02, -0.08), 0.05)
    assert "guard: tuned vs base changed -0.020" in regressions(report(-0.02, -0.08), 0.05)[0]
    assert not regressions(report(-0.02, -0.04), 0.05)


def test_gate_against_a_saved_report_pairs_item_by_item():
    items = {f"q{i}": 1.0 for i in range(40)}
    saved = {"models": [{"suite": "guard", "model": "tuned", "score": 1.0, "item_scores": items}]}
    lost = dict(items, q0=0.0, q1=0.0, q2=0.0, q3=0.0)  # 4 of 40 lost: -0.1
    now = {
        "comparisons": [],
        "models": [{"suite": "guard", "model": "tuned", "score": 0.9, "item_scores": lost}],
    }
    assert regressions(now, 0.05, saved)
    assert not regressions(now, 0.25, saved)
    kept = {
        "comparisons": [],
        "models": [{"suite": "guard", "model": "tuned", "score": 1.0, "item_scores": items}],
    }
    assert not regressions(kept, 0.05, saved)


def test_report_states_the_noise_floor_and_the_verdict():
    base = [1.0, 0.0, 1.0, 1.0]
    floor = paired_stats("guard", "base", "base again", base, base)
    pair = paired_stats("guard", "base", "tuned", base, [1.0, 0.0, 1.0, 0.0], margin=0.05)
    meta = {"base_url": "u", "models": ["base", "tuned"], "seed": 0, "guard_margin": 0.05}
    meta["decoding"] = {"guard": "greedy"}
    text = render_markdown(as_json([], [pair], meta, [floor]))
    assert "Decoding: guard: greedy." in text
    assert "non-inferior (margin 0.05) |" in text and "| **no** |" in text
    assert "| guard | base | 0 of 4 | +0.000 | [+0.000, +0.000] |" in text
    assert "- guard: tuned **does not keep** what base could do" in text
