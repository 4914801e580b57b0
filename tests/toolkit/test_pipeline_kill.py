"""`tuneserve run` killed (SIGKILL of its process group) during each stage, then re-run.

One tiny run is killed in train, re-run and killed in export, re-run and killed in eval, then
re-run to the end: each re-run finishes what was cut, redoes no finished stage, and no file
that looks complete is half written. A last `run --serve` proves the printed openai snippet
and curl line work and that Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DEMO_RECIPE, REPO

pytestmark = pytest.mark.slow

# As small as a run gets: one row a step (a step is then about a second on 2 CPU cores).
TINY = [
    "name=tiny",
    "train.max_steps=6",
    "train.save_steps=2",
    "train.per_device_train_batch_size=1",
    "train.gradient_accumulation_steps=1",
    "eval.suites=[heldout]",
    "eval.max_tokens=8",
]


class Run:
    """One `tuneserve run` child in its own process group, its output in a file."""

    def __init__(self, models: Path, log: Path, *args: str) -> None:
        self.log = log
        command = [sys.executable, "-m", "toolkit.cli", "run", str(DEMO_RECIPE)]
        command += [arg for pair in TINY for arg in ("--set", pair)]
        command += list(args) if "--serve" in args else ["--no-serve", *args]
        env = {**os.environ, "TUNESERVE_MODELS_DIR": str(models)}
        with log.open("w") as out:
            self.child = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 1500) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.child.poll() is not None:
                pytest.fail(f"run exited ({self.child.returncode}) before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} after {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def kill(self) -> list[int]:
        """SIGKILL the whole group; return the descendants it had (engines have their own)."""
        family = descendants(self.child.pid)
        os.killpg(self.child.pid, signal.SIGKILL)
        self.child.wait()
        return family

    def finish(self, timeout: float = 1500) -> str:
        try:
            self.child.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"run did not finish in {timeout} s:\n{self.output()}")
        assert self.child.returncode == 0, self.output()
        return self.output()


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def alive(pids: list[int], grace: float = 15) -> list[int]:
    """The pids still running (not zombies) after up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        running = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                running.append(pid)
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.2)


def complete_safetensors(path: Path) -> bool:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return len(data) == 8 + size + end


def complete_gguf(path: Path) -> bool:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    return path.stat().st_size >= end


def half_written(folder: Path) -> list[str]:
    """Files under a final (non-temp) name that are not whole."""
    bad = []
    for path in folder.rglob("*"):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(folder).parts):
            continue  # temp names (.name.xxx.tmp) never look complete
        try:
            if path.suffix == ".safetensors":
                ok = complete_safetensors(path)
            elif path.suffix == ".gguf":
                ok = complete_gguf(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
                ok = True
            elif path.suffix == ".png":
                ok = path.read_bytes()[-8:-4] == b"IEND"
            else:
                ok = True
        except Exception as exc:  # any failure to read it whole
            ok, path = False, Path(f"{path} ({type(exc).__name__}: {exc})")
        if not ok:
            bad.append(str(path))
    return bad


def stages_done(folder: Path) -> set[str]:
    manifest = folder / "manifest.json"
    return set(json.loads(manifest.read_text()).get("stages", {})) if manifest.is_file() else set()


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_killed_in_each_stage_then_rerun_completes(tmp_path, base_model, base_gguf):
    models = tmp_path / "models"
    folder = models / "runs" / "tiny"
    gguf = folder / "gguf" / "tiny-q8_0.gguf"
    orphans: list[int] = []

    # 1. train: killed after the first checkpoint, before the adapter.
    run = Run(models, tmp_path / "1.log")
    run.wait_for(
        lambda: any((folder / "checkpoints").glob("checkpoint-*/trainer_state.json")),
        "a training checkpoint",
    )
    orphans += run.kill()
    assert "[1/3] train: fine-tune the adapter" in run.output()
    assert not (folder / "adapter").exists(), "killed too late: training had finished"
    assert stages_done(folder) == set() and half_written(folder) == []
    metrics_at_kill = (folder / "metrics.jsonl").read_text()

    # 2. export: training resumes from its checkpoint; killed while a GGUF is being written.
    run = Run(models, tmp_path / "2.log")
    run.wait_for(
        lambda: any(p.stat().st_size > 1 << 20 for p in (folder / "gguf").glob(".*.tmp")),
        "a GGUF being written",
    )
    orphans += run.kill()
    assert "[1/3] train: done" in run.output() and "[2/3] export:" in run.output()
    assert (folder / "metrics.jsonl").read_text().startswith(metrics_at_kill)  # resumed
    assert stages_done(folder) == {"train"} and half_written(folder) == []
    assert not gguf.exists() or complete_gguf(gguf)
    adapter = mtimes(folder / "adapter")

    # 3. eval: train is skipped, export finishes; killed after some answers are cached.
    run = Run(models, tmp_path / "3.log")
    responses = folder / "eval" / "responses.jsonl"
    run.wait_for(
        lambda: responses.is_file() and len(responses.read_text().splitlines()) >= 4,
        "cached eval answers",
    )
    orphans += run.kill()
    assert "[1/3] train: up to date, skipped" in run.output()
    assert "[3/3] eval:" in run.output()
    assert stages_done(folder) == {"train", "export"} and half_written(folder) == []
    assert not (folder / "eval" / "report.json").exists()
    assert mtimes(folder / "adapter") == adapter
    exported = mtimes(folder / "gguf")
    answered = responses.read_text()

    # Every engine the killed runs started died with them.
    assert alive(orphans) == [], f"orphaned processes: {alive(orphans)}"

    # 4. to the end: only the eval's missing requests are sent.
    output = Run(models, tmp_path / "4.log").finish()
    assert "[1/3] train: up to date, skipped" in output
    assert "[2/3] export: up to date, skipped" in output
    assert "[3/3] eval: done" in output
    assert mtimes(folder / "adapter") == adapter and mtimes(folder / "gguf") == exported
    lines = responses.read_text().splitlines()
    assert responses.read_text().startswith(answered)
    keys = [json.loads(line)["key"] for line in lines]
    heldout = len((folder / "data" / "heldout.jsonl").read_text().splitlines())
    # base, tuned, and the base once more for the noise floor (its own key); none asked twice
    assert len(keys) == len(set(keys)) == 3 * heldout
    assert stages_done(folder) == {"train", "export", "eval"} and half_written(folder) == []
    assert not list(folder.rglob("*.tmp"))
    assert f"report: {folder / 'eval' / 'report.md'}" in output
    assert "models: base, tuned" in output

    # 5. `run --serve`: nothing to redo; the printed snippet and curl line work; Ctrl-C stops.
    port = free_port()
    serving = Run(models, tmp_path / "5.log", "--serve", "--set", f"serve.port={port}")
    serving.wait_for(lambda: "endpoint: " in serving.output(), "the endpoint line", 180)
    serving.wait_for(lambda: "curl " in serving.output(), "the curl line", 10)
    output = serving.output()
    assert f"endpoint: http://127.0.0.1:{port}/v1" in output
    snippet = output[output.index("from openai import OpenAI") : output.index("\ncurl ")]
    said = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120
    )
    assert said.returncode == 0 and said.stdout.strip(), said.stderr
    curl = re.search(r"^curl .*$", output, re.MULTILINE).group(0)
    if shutil.which("curl"):
        reply = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=120)
        assert json.loads(reply.stdout)["choices"][0]["message"]["content"], reply.stdout
    family = descendants(serving.child.pid)
    assert family  # the engines
    os.killpg(serving.child.pid, signal.SIGINT)
    assert serving.child.wait(60) == 0, serving.output()
    assert "stopping" in serving.output()
    assert alive(family) == []
