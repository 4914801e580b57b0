"""Where keys go: only to the endpoints the user named on the command line, over real HTTP."""

from __future__ import annotations

import json

from click.testing import CliRunner

from toolkit.cli import main


def one_item_suite(tmp_path, judge: dict | None = None, scorer: str = "contains"):
    row = {
        "id": "a",
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "expected": "Paris",
        "scorer": "judge" if judge is not None else scorer,
    }
    if judge is not None:
        row["judge"] = judge
    path = tmp_path / "suite.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def evaluate(suite, url: str, *extra: str, env: dict | None = None):
    args = ["eval", "--suite", str(suite), "--model", "student", "--base-url", url, "--json"]
    return CliRunner().invoke(main, [*args, *extra], env=env)


def test_openai_api_key_is_sent_only_when_asked_for(fake_openai, tmp_path, monkeypatch):
    """A user's real OpenAI key must not go to whatever --base-url says by default."""
    endpoint = fake_openai()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-real-openai-key")
    monkeypatch.delenv("TUNESERVE_API_KEY", raising=False)
    suite = one_item_suite(tmp_path)
    done = evaluate(suite, endpoint.url)
    assert done.exit_code == 0, done.output
    sent = {seen.authorization for seen in endpoint.chats()}
    assert sent and not any("sk-users" in (value or "") for value in sent), sent

    endpoint.seen.clear()
    done = evaluate(suite, endpoint.url, "--api-key-env", "OPENAI_API_KEY")
    assert done.exit_code == 0, done.output
    assert {s.authorization for s in endpoint.chats()} == {"Bearer sk-users-real-openai-key"}

    endpoint.seen.clear()
    monkeypatch.setenv("TUNESERVE_API_KEY", "gateway-key")  # the gateway's own variable
    assert evaluate(suite, endpoint.url).exit_code == 0
    assert {s.authorization for s in endpoint.chats()} == {"Bearer gateway-key"}


def test_a_suite_file_cannot_send_a_secret_to_a_host_it_names(fake_openai, tmp_path, monkeypatch):
    endpoint, elsewhere = fake_openai(), fake_openai()
    monkeypatch.setenv("SOME_SECRET", "top-secret-value")
    judge = {"base_url": elsewhere.url, "model": "grader", "api_key_env": "SOME_SECRET"}
    suite = one_item_suite(tmp_path, judge)
    done = evaluate(suite, endpoint.url, "--judge-api-key", "judge-key")
    assert done.exit_code == 2, done.output
    assert f"--allow-judge {elsewhere.url}" in done.output
    assert elsewhere.seen == [] and endpoint.seen == []  # refused before anything was asked

    # The user allows that judge: it gets the variable the suite names.
    done = evaluate(suite, endpoint.url, "--allow-judge", elsewhere.url)
    assert done.exit_code == 0, done.output
    assert {s.authorization for s in elsewhere.chats()} == {"Bearer top-secret-value"}


def test_command_line_judge_keys_stay_with_the_command_line_judge(fake_openai, tmp_path):
    endpoint, judge_host, elsewhere = fake_openai(), fake_openai(), fake_openai()
    suite = one_item_suite(tmp_path, {"base_url": elsewhere.url, "model": "grader"})
    flags = ["--judge-base-url", judge_host.url, "--judge-api-key", "judge-key"]
    done = evaluate(suite, endpoint.url, *flags, "--api-key", "endpoint-key")
    assert done.exit_code == 0, done.output
    # the item's own judge was asked (a suite may name one) but got neither key
    assert [s.authorization for s in elsewhere.chats()] == ["Bearer none"]
    assert {s.authorization for s in endpoint.chats()} == {"Bearer endpoint-key"}
