"""The `judge` scorer: verdict parsing, and grading through a judge endpoint (a local fake
OpenAI server here, as the judge is "any endpoint") with caching and errors surfaced."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from evals.api import run_eval
from evals.judge import JudgeConfig, parse_verdict, resolve_endpoint
from toolkit.cli import main
from toolkit.core.errors import TuneserveError


@pytest.mark.parametrize(
    ("reply", "scale", "grade"),
    [
        ("VERDICT: PASS", None, 1.0),
        ("The answer is wrong.\nVERDICT: FAIL", None, 0.0),
        ("**Verdict:** pass", None, 1.0),
        ("I must end with `VERDICT: PASS` or `VERDICT: FAIL`.\nVERDICT: FAIL", None, 0.0),
        ("<think>looks like VERDICT: FAIL at first</think>\nVERDICT: PASS", None, 1.0),
        ("Correct", None, 1.0),
        ("incorrect.", None, 0.0),
        ("SCORE: 7", 10, 0.7),
        ("Score: 3/4", None, 0.75),
        ("score = 8 out of 10", None, 0.8),
        ("SCORE: 10\nVERDICT: PASS", 10, 1.0),
    ],
)
def test_parse_verdict(reply, scale, grade):
    assert parse_verdict(reply, scale) == pytest.approx(grade)


@pytest.mark.parametrize(
    ("reply", "scale"),
    [
        ("I am not sure about this one.", None),
        ("", None),
        ("<think>VERDICT: PASS</think>", None),  # only thinking, no verdict given
        ("SCORE: 12", 10),  # out of range
        ("yes and no", None),  # both
    ],
)
def test_parse_verdict_rejects_replies_without_a_grade(reply, scale):
    with pytest.raises(ValueError):
        parse_verdict(reply, scale)


def test_endpoint_resolution_item_over_flags_over_the_evaluated_endpoint(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "from-env")
    flags = JudgeConfig(model="flag-model")
    endpoint = resolve_endpoint(None, flags, "http://e/v1/", "k")
    assert (endpoint.base_url, endpoint.model, endpoint.api_key) == (
        "http://e/v1",
        "flag-model",
        "k",
    )
    item = JudgeConfig(base_url="http://j/v1", model="m", api_key_env="JUDGE_KEY")
    endpoint = resolve_endpoint(item, flags, "http://e/v1", "k", allowed=["http://j/v1/"])
    assert (endpoint.base_url, endpoint.model, endpoint.api_key) == ("http://j/v1", "m", "from-env")
    with pytest.raises(TuneserveError, match=r"\$JUDGE_KEY .* http://j/v1") as caught:
        resolve_endpoint(item, flags, "http://e/v1", "k")  # a host only the data file names
    assert "--allow-judge http://j/v1" in caught.value.hint
    endpoint = resolve_endpoint(JudgeConfig(base_url="http://j/v1"), flags, "http://e/v1", "k")
    assert endpoint.api_key is None  # the evaluated endpoint's key never goes to another host
    flagged = JudgeConfig(model="flag-model", base_url="http://cli/v1", api_key="cli-key")
    assert resolve_endpoint(None, flagged, "http://e/v1", "k").api_key == "cli-key"
    item = JudgeConfig(base_url="http://j/v1")
    assert resolve_endpoint(item, flagged, "http://e/v1", "k").api_key is None  # nor the flag's
    assert resolve_endpoint(item, flagged, "http://e/v1", "k", ["http://j/v1"]).api_key == "cli-key"
    with pytest.raises(TuneserveError, match="needs a judge model") as caught:
        resolve_endpoint(None, JudgeConfig(), "http://e/v1", None)
    assert "--judge-model" in caught.value.hint


STUDENT = {"France": "Paris.", "Italy": "Lyon.", "Spain": "%%%", "Peru": "Lima."}


@pytest.fixture(scope="module")
def fake():
    """One fake OpenAI server: model `student` answers, `grader` judges, `broken` fails (400)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    asked: Counter = Counter()

    async def chat(request):
        body = await request.json()
        asked[body["model"]] += 1
        text = body["messages"][-1]["content"]
        if body["model"] == "broken":
            return JSONResponse({"error": {"message": "bad judge", "type": "invalid"}}, 400)
        if body["model"] == "student":
            content = next(v for k, v in STUDENT.items() if k in text)
        else:
            graded = text.split("[Answer to grade]")[1]
            reference = text.split("[Reference answer]\n")[1].split("\n")[0].strip(".")
            if "%%%" in graded:
                content = "Hmm, hard to say."
            elif reference in graded:
                content = "It matches the reference.\nVERDICT: PASS"
            else:
                content = "It does not.\nVERDICT: FAIL"
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        )

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", asked
    server.should_exit = True
    thread.join(5)


def judged_suite(tmp_path, rubric: str | None = None):
    rows = []
    for country, capital in (("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid")):
        row = {
            "id": country,
            "messages": [{"role": "user", "content": f"Capital of {country}?"}],
            "expected": capital,
            "scorer": "judge",
        }
        if rubric:
            row["judge"] = {"rubric": rubric}
        rows.append(row)
    rows.append(
        {
            "id": "Peru",
            "messages": [{"role": "user", "content": "Capital of Peru?"}],
            "expected": "Lima",
            "scorer": "judge",
            "judge": {"model": "broken"},  # the item names its own judge
        }
    )
    path = tmp_path / "capitals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_judge_grades_answers_caches_and_reports_what_it_could_not_grade(fake, tmp_path):
    url, asked = fake
    suite = judged_suite(tmp_path)

    def evaluate():
        return run_eval(
            suites=[str(suite)],
            models=["student"],
            base_url=url,
            report_dir=tmp_path / "report",
            judge=JudgeConfig(model="grader"),
            progress=False,
        )

    asked.clear()
    report = evaluate()
    stats = report.data["models"][0]
    # France passes, Italy fails, Spain's grade is unreadable, Peru's judge answers 400.
    assert stats["score"] == pytest.approx(0.25)
    assert stats["errors"] == 2
    assert asked == {"student": 4, "grader": 3, "broken": 1}

    asked.clear()
    assert evaluate().data["models"][0]["score"] == pytest.approx(0.25)
    assert asked == {"broken": 1}  # answers and judge replies came from the cache; errors do not

    asked.clear()
    run_eval(
        suites=[str(judged_suite(tmp_path, rubric="Be lenient."))],
        models=["student"],
        base_url=url,
        report_dir=tmp_path / "report",
        judge=JudgeConfig(model="grader"),
        progress=False,
    )
    assert asked == {"grader": 3, "broken": 1}  # a new rubric re-asks the judge only


def test_eval_command_takes_the_judge_from_flags(fake, tmp_path):
    url, _ = fake
    suite = tmp_path / "one.jsonl"
    row = {
        "id": "a",
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "expected": "Paris",
        "scorer": "judge",
    }
    suite.write_text(json.dumps(row) + "\n")
    args = ["eval", "--suite", str(suite), "--model", "student", "--base-url", url, "--json"]
    done = CliRunner().invoke(main, [*args, "--judge-model", "grader", "--judge-base-url", url])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["models"][0]["score"] == 1.0
    missing = CliRunner().invoke(main, args)
    assert missing.exit_code == 2 and "needs a judge model" in missing.output
