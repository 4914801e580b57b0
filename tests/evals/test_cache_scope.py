"""The response cache answers only for the same endpoint and the same served model, and the
report says which answers came from it."""

from __future__ import annotations

import json

from evals.api import run_eval
from evals.report import render_markdown


def suite(tmp_path):
    rows = [
        {"id": f"q{i}", "messages": [{"role": "user", "content": f"Capital {i}?"}],
         "expected": "Paris", "scorer": "contains"}
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "capitals.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def evaluate(url: str, tmp_path, **options):
    """One pass over the 3 items (no noise-floor repeat, so counts are items)."""
    options.setdefault("noise_floor", False)
    return run_eval(
        suites=[str(suite(tmp_path))],
        models=["student"],
        base_url=url,
        report_dir=tmp_path / "report",
        progress=False,
        **options,
    )


def test_another_endpoint_is_asked_again_with_the_same_report_dir(fake_openai, tmp_path):
    first, second = fake_openai(reply="Paris."), fake_openai(reply="Lyon.")
    assert evaluate(first.url, tmp_path).data["models"][0]["score"] == 1.0
    report = evaluate(second.url, tmp_path)
    assert len(second.chats()) == 3, "the second endpoint was answered from the first's cache"
    assert report.data["models"][0]["score"] == 0.0
    assert report.data["meta"]["cache"]["answers_from_cache"] == 0


def test_a_model_re_served_under_the_same_name_is_asked_again(fake_openai, tmp_path):
    endpoint = fake_openai(reply="Paris.", identities={"student": "sha256:aaaa"})
    assert evaluate(endpoint.url, tmp_path).data["models"][0]["score"] == 1.0
    endpoint.identities["student"] = "sha256:bbbb"  # another model file behind the name
    endpoint.reply = "Lyon."
    endpoint.seen.clear()
    report = evaluate(endpoint.url, tmp_path)
    assert len(endpoint.chats()) == 3 and report.data["models"][0]["score"] == 0.0


def test_the_report_says_which_answers_came_from_the_cache(fake_openai, tmp_path):
    endpoint = fake_openai(reply="Paris.", identities={"student": "sha256:" + "c" * 64})
    evaluate(endpoint.url, tmp_path)
    endpoint.seen.clear()
    report = evaluate(endpoint.url, tmp_path)
    assert endpoint.chats() == []  # the same endpoint and model: nothing asked again
    cache = report.data["meta"]["cache"]
    assert (cache["answers_from_cache"], cache["answers_asked"]) == (3, 0)
    assert report.data["models"][0]["cached"] == 3
    text = render_markdown(report.data)
    assert "Answers from the cache" in text and "3 reused, 0 asked" in text
    assert "capitals/student 3 of 3" in text
    assert "student: cached by endpoint URL and served identity sha256:cccc" in text


def test_an_endpoint_without_identities_is_keyed_by_url_and_name(fake_openai, tmp_path):
    endpoint = fake_openai(reply="Paris.")
    report = evaluate(endpoint.url, tmp_path)
    assert "model name at the endpoint URL" in report.data["meta"]["cache"]["keyed_by"]["student"]


def test_items_that_share_a_prompt_each_keep_their_id_when_answered_from_the_cache(
    fake_openai, tmp_path
):
    """Two items with the same messages share one cache line; a re-run must still score each
    under its own id (it raised KeyError when the line's item id was taken instead)."""
    rows = [
        {"id": name, "messages": [{"role": "user", "content": "Capital of France?"}],
         "expected": "Paris", "scorer": "contains"}
        for name in ("first", "second")
    ]  # fmt: skip
    path = tmp_path / "twins.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    endpoint = fake_openai(reply="Paris.")
    options = {"models": ["student"], "base_url": endpoint.url, "report_dir": tmp_path / "r"}
    run_eval(suites=[str(path)], progress=False, noise_floor=False, **options)
    endpoint.seen.clear()
    report = run_eval(suites=[str(path)], progress=False, noise_floor=False, **options)
    assert endpoint.chats() == []  # both from the one cache line
    answered = {item["id"] for item in report.data["items"]}
    assert answered == {"first", "second"} and report.data["models"][0]["score"] == 1.0
