"""Before/after evals through the real gateway over real llama.cpp: reports, gate, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from evals.api import run_eval
from tests.conftest import REPO
from toolkit.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def endpoint(base_gguf):
    """base and a second name for the same GGUF behind one gateway."""
    from serve.launcher import serve_models

    with serve_models([f"base={base_gguf}", f"other={base_gguf}"], engine="llamacpp") as served:
        yield served


def requests_served(endpoint) -> float:
    text = httpx.get(f"{endpoint.root_url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tuneserve_requests_total{")
    )


def small_suite(tmp_path, n: int = 12):
    path = tmp_path / "small.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "messages": [{"role": "user", "content": f"What is {i} + {i}? Reply with the number."}],
            "expected": 2 * i,
            "scorer": "number",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_before_after_run_writes_three_report_files(endpoint, tmp_path):
    suite = small_suite(tmp_path)
    report = run_eval(
        suites=[str(suite), "guard"],
        models=["base", "other"],
        base_url=endpoint.base_url,
        report_dir=tmp_path / "report",
        max_tokens=16,
        progress=False,
    )
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / "report" / name).stat().st_size > 100
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {(s["suite"], s["model"]) for s in data["models"]} == {
        ("small", "base"),
        ("small", "other"),
        ("guard", "base"),
        ("guard", "other"),
    }
    assert all(s["errors"] == 0 and s["latency_p50"] > 0 for s in data["models"])
    assert 0 < report.summary()["guard/base"] < 1
    assert (tmp_path / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_gate_exits_1_on_a_planted_regression_and_0_otherwise(endpoint, tmp_path):
    suite = small_suite(tmp_path, 6)
    common = ["eval", "--suite", str(suite), "--model", "base", "--base-url", endpoint.base_url]
    common += ["--max-tokens", "12", "--json"]
    ok = CliRunner().invoke(
        main, [*common, "--report", str(tmp_path / "a"), "--fail-on-regression", "0.05"]
    )
    assert ok.exit_code == 0, ok.output
    planted = json.loads((tmp_path / "a" / "report.json").read_text())
    for stats in planted["models"]:
        stats["score"] += 0.5  # a baseline the model cannot meet
        del stats["item_scores"]  # as an older report: compared by score, not item by item
    (tmp_path / "high.json").write_text(json.dumps(planted))
    failed = CliRunner().invoke(
        main, [*common, "--baseline", str(tmp_path / "high.json"), "--fail-on-regression", "0.05"]
    )
    assert failed.exit_code == 1
    assert "regression: small: base scored" in failed.output


def test_killed_eval_resumes_from_its_cache_without_repeating_requests(endpoint, tmp_path):
    suite = small_suite(tmp_path, 16)
    report = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "toolkit.cli",
        "eval",
        "--suite",
        str(suite),
        "--model",
        "base",
    ]
    command += ["--base-url", endpoint.base_url, "--report", str(report), "--max-tokens", "24"]
    command += ["--concurrency", "1", "--json"]
    child = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ
    )
    cache = report / "responses.jsonl"
    deadline = time.monotonic() + 240
    while child.poll() is None and time.monotonic() < deadline:
        if cache.is_file() and len(cache.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len(cache.read_text().splitlines())
    assert 4 <= done_before < 16 and not (report / "report.json").exists()

    served_before = requests_served(endpoint)
    run_eval(
        suites=[str(suite)],
        models=["base"],
        base_url=endpoint.base_url,
        report_dir=report,
        max_tokens=24,
        progress=False,
    )
    # every item twice: the answer and the noise floor's repeat, each under its own cache key
    assert requests_served(endpoint) - served_before == 2 * 16 - done_before
    served_again = requests_served(endpoint)
    run_eval(
        suites=[str(suite)],
        models=["base"],
        base_url=endpoint.base_url,
        report_dir=report,
        max_tokens=24,
        progress=False,
    )
    assert requests_served(endpoint) == served_again  # a repeated eval costs nothing


def test_greedy_scores_repeat_across_runs_and_engines_with_a_zero_noise_floor(endpoint, tmp_path):
    """The A/A check: one GGUF behind two names (two engines), asked twice from empty caches."""
    suite = small_suite(tmp_path, 12)
    guard = tmp_path / "guard.jsonl"  # a slice of the guard's kinds keeps this short
    lines = (REPO / "evals" / "suites" / "guard.jsonl").read_text().splitlines()
    guard.write_text("\n".join(lines[::15]) + "\n")
    runs = [
        run_eval(
            suites=[str(suite), str(guard)],
            models=["base", "other"],
            base_url=endpoint.base_url,
            report_dir=tmp_path / f"run{i}",
            max_tokens=24,
            progress=False,
        ).data
        for i in range(2)
    ]
    for data in runs:
        for pair in data["comparisons"]:  # base vs the same model on another engine
            assert (pair["wins"], pair["losses"], pair["delta"]) == (0, 0, 0.0), pair
            assert pair["noninferior"] and list(pair["delta_ci"]) == [0.0, 0.0]
        assert {f["suite"] for f in data["noise_floor"]} == {"small", "guard"}
        assert all(f["wins"] + f["losses"] == 0 for f in data["noise_floor"])
        assert data["meta"]["decoding"] == {"small": "greedy", "guard": "greedy"}
    items = [{(s["suite"], s["model"]): s["item_scores"] for s in d["models"]} for d in runs]
    assert items[0] == items[1]  # the same scores, item by item, on every run
    answers = [
        sorted(
            json.loads(line)["answer"]["output"]
            for line in (tmp_path / f"run{i}" / "responses.jsonl").open()
        )
        for i in range(2)
    ]
    assert answers[0] == answers[1]
