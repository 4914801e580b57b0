"""The run's progress display (ETA, plain lines for logs) and what a finished run prints."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from toolkit.pipeline.comparison import ServePlan
from toolkit.pipeline.progress import RunProgress, StageStatus, clock, eta_seconds
from toolkit.pipeline.run import RunResult, export_status, success_message, train_status
from toolkit.recipe.schema import Recipe


@pytest.mark.parametrize(
    ("first", "now", "total", "eta"),
    [
        (None, (10.0, 5), 10, None),  # nothing seen yet
        ((0.0, 0), (10.0, 5), None, None),  # no known total
        ((0.0, 0), (10.0, 0), 10, None),  # has not moved
        ((0.0, 0), (10.0, 5), 10, 10.0),  # 2 s a step, 5 to go
        ((4.0, 4), (8.0, 6), 10, 8.0),  # resumed at 4: the rate counts only what this run did
        ((0.0, 0), (3.0, 10), 10, 0.0),  # finished
    ],
)
def test_eta_from_the_rate_seen_so_far(first, now, total, eta):
    assert eta_seconds(first, now, total) == eta


def test_clock():
    assert [clock(None), clock(5), clock(125), clock(3725)] == ["?", "0:05", "2:05", "1:02:05"]


def test_plain_lines_name_stage_activity_count_and_eta():
    lines: list[str] = []
    status = StageStatus("training, loss 2.1000", 0, 30, "steps")
    with RunProgress(3, live=False, echo=lines.append, plain_every=0.2) as display:
        display.start_stage(1, "train", "fine-tune the adapter", lambda: status, [20.0, None])
        time.sleep(0.7)
        status.done = 10
        time.sleep(1.2)
        display.end_stage("done", 1.9)
    assert lines[0] == "[1/3] train: fine-tune the adapter"
    assert lines[-1] == "[1/3] train: done in 1.9 s"
    progress = [line for line in lines[1:-1] if "10/30 steps" in line]
    assert progress, lines
    assert "training, loss 2.1000" in progress[-1] and "elapsed" in progress[-1]
    assert "stage eta ?" in progress[-1]  # a jump from 0 to 10 seen once gives no rate yet
    assert "run eta ?" in progress[-1]  # the eval stage has no estimate


def test_live_display_renders_a_bar_and_the_line():
    from rich.console import Console

    display = RunProgress(3, live=False, echo=lambda _: None)
    display.start_stage(2, "export", "merge and export", lambda: StageStatus("merging", 1, 2), [])
    console = Console(width=160, record=True, force_terminal=False)
    console.print(display.render())
    text = console.export_text()
    assert "[2/3] export: merging" in text and "1/2" in text


def test_a_failing_probe_does_not_break_the_display():
    def broken() -> StageStatus:
        raise json.JSONDecodeError("cut", "", 0)

    display = RunProgress(1, live=False, echo=lambda _: None)
    display.start_stage(1, "train", "x", broken, [])
    assert "train: working" in display.line()


def test_train_and_export_status_read_the_run_folder(tmp_path):
    recipe = Recipe.model_validate({"train": {"max_steps": 30}})
    assert train_status(recipe, tmp_path).doing.startswith("preparing")
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 3, "loss": 2.5}) + "\n" + '{"step": 4, "lo'  # a line being written
    )
    status = train_status(recipe, tmp_path)
    assert (status.done, status.total, status.doing) == (3, 30, "training, loss 2.5000")
    (tmp_path / "manifest.json").write_text(json.dumps({"exports": {"merged16": {}}}))
    status = export_status(tmp_path, ["merged16", "gguf"], ["q8_0", "q4_k_m"])
    assert (status.done, status.total, status.doing) == (1, 3, "writing and checking gguf q8_0")


@pytest.mark.parametrize("serving", [True, False])
def test_success_message_has_report_endpoint_names_snippet_and_curl(tmp_path, serving):
    result = RunResult(tmp_path / "runs" / "r", report_dir=tmp_path / "runs" / "r" / "eval")
    models = [f"base={tmp_path / 'b.gguf'}", f"tuned={tmp_path / 't.gguf'}"]
    result.plan = ServePlan("llamacpp", models)
    url = "http://127.0.0.1:8000/v1"
    text = success_message(result, url, ["base", "tuned"], "k3y", serving=serving)
    assert f"report: {tmp_path / 'runs' / 'r' / 'eval' / 'report.md'}" in text
    assert ("endpoint: " + url if serving else "endpoint once served: " + url) in text
    assert serving or f"tuneserve serve base={tmp_path / 'b.gguf'} tuned=" in text
    assert "models: base, tuned" in text
    snippet = text[text.index("import os") : text.index("\ncurl ")]
    ast.parse(snippet)  # copy-paste runnable Python
    assert 'model="tuned"' in snippet and 'api_key=os.environ["TUNESERVE_API_KEY"]' in snippet
    curl = next(line for line in text.splitlines() if line.startswith("curl "))
    assert (
        f"{url}/chat/completions" in curl and '"Authorization: Bearer $TUNESERVE_API_KEY"' in curl
    )
    assert json.loads(curl.split(" -d ", 1)[1].strip("'"))["model"] == "tuned"
    assert "k3y" not in text  # the real key is never printed (terminals and CI logs keep it)


def test_success_message_without_a_key_shows_none():
    result = RunResult(Path("runs/r"), report_dir=Path("runs/r/eval"))
    text = success_message(result, "http://127.0.0.1:8000/v1", ["tuned"], None, serving=True)
    assert 'api_key="none"' in text and "'Authorization: Bearer none'" in text
    assert "TUNESERVE_API_KEY" not in text
