"""The compare page's server side: the shell is open and self-contained, its data (the report and
the training run of `--report DIR`) answers only with the gateway's key. No engine is needed:
the gateway runs over no models (the browser tests in test_page_browser.py use real ones)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from serve.gateway import Gateway
from serve.page import STATIC_DIR, find_report_dir, read_run
from toolkit.core.errors import TuneserveError

KEY = "page-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "demo"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "report.json").write_text(json.dumps({"meta": {"models": ["base", "tuned"]}}))
    # the last line was cut by a kill while training wrote it
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 1.5}\n{"st')
    (run / "recipe.yaml").write_text("name: demo\nserve:\n  api_key: s3cret-value\n  port: 8000\n")
    return run


def client(report_dir: Path | None, api_key: str | None = KEY) -> TestClient:
    return TestClient(Gateway([], api_key=api_key, report_dir=report_dir).app)


def test_the_shell_is_served_without_a_key_and_runs_only_its_own_files(run_folder):
    page = client(run_folder / "eval")
    shell = page.get("/")
    assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
    policy = shell.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    # every file the shell and its modules load is served here, and nothing comes from elsewhere
    texts = [shell.text] + [path.read_text() for path in STATIC_DIR.glob("*.js")]
    loaded = set(re.findall(r'(?:src|href)="(/page/[^"]+)"', shell.text))
    loaded |= {f"/page/{name}" for text in texts for name in re.findall(r'from "\./([^"]+)"', text)}
    assert {"/page/app.js", "/page/style.css", "/page/report.js"} <= loaded
    for path in loaded:
        answer = page.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert not any(re.search(r"https?://(?!www\.w3\.org/2000/svg)", text) for text in texts)


@pytest.mark.parametrize("path", ["/page/api/report", "/page/api/run"])
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": KEY}])
def test_the_page_data_needs_the_gateway_key(run_folder, path, headers):
    answer = client(run_folder / "eval").get(path, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_the_report_and_its_run_answer_with_the_key(run_folder):
    page = client(run_folder / "eval")
    assert page.get("/page/api/report", headers=AUTH).json() == {
        "meta": {"models": ["base", "tuned"]}
    }
    run = page.get("/page/api/run", headers=AUTH).json()
    assert run["name"] == "demo"
    assert run["metrics"] == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 1.5}]
    assert "s3cret-value" not in run["recipe"] and "api_key: <hidden>" in run["recipe"]
    assert "port: 8000" in run["recipe"]


def test_figures_that_are_not_numbers_reach_the_browser_as_null(run_folder):
    report = run_folder / "eval" / "report.json"
    report.write_text('{"models": [{"latency_p50": NaN, "score": 0.5}]}')
    answer = client(run_folder / "eval").get("/page/api/report", headers=AUTH)
    assert answer.text.replace(" ", "") == '{"models":[{"latency_p50":null,"score":0.5}]}'
    report.write_text('{"models": [')
    broken = client(run_folder / "eval").get("/page/api/report", headers=AUTH)
    assert broken.status_code == 500 and "not valid JSON" in broken.json()["error"]["message"]


def test_without_a_key_on_the_gateway_the_data_is_open_as_every_route_is(run_folder):
    assert client(run_folder / "eval", api_key=None).get("/page/api/report").status_code == 200


def test_without_a_report_the_page_says_how_to_give_one():
    page = client(None)
    for path in ("/page/api/report", "/page/api/run"):
        answer = page.get(path, headers=AUTH)
        assert answer.status_code == 404
        assert "--report" in answer.json()["error"]["message"]


def test_a_report_folder_outside_a_run_has_no_training_run(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    assert client(tmp_path).get("/page/api/run", headers=AUTH).status_code == 404
    assert read_run(tmp_path.parent) is None


def test_an_eval_folder_before_its_first_report_is_a_404_that_names_it(tmp_path):
    answer = client(tmp_path).get("/page/api/report", headers=AUTH)
    assert answer.status_code == 404 and str(tmp_path) in answer.json()["error"]["message"]


def test_report_dir_accepts_the_eval_folder_or_its_run_and_refuses_a_missing_one(run_folder):
    assert find_report_dir(run_folder / "eval") == (run_folder / "eval").resolve()
    assert find_report_dir(run_folder) == (run_folder / "eval").resolve()
    with pytest.raises(TuneserveError, match="no such folder") as caught:
        find_report_dir(run_folder / "evals")
    assert "models/runs/NAME/eval" in (caught.value.hint or "")
