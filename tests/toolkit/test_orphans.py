"""A child armed with die_with_parent() never outlives tuneserve: not when tuneserve dies after
arming it, and not when tuneserve died before the child could arm (the fork/prctl race)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.process_tree import alive

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")

# The parent forks a child that arms itself and would then write `survived`. `when` says when
# the parent exits: before the child arms, after it armed, or never (it waits for the child).
CHILD = """
import os, sys, time
from pathlib import Path
from toolkit.core.orphans import die_with_parent

folder, when = Path(sys.argv[1]), sys.argv[2]
arm = die_with_parent()
parent = os.getpid()
if os.fork() == 0:
    (folder / "child.pid").write_text(str(os.getpid()))
    if when == "before_arming":
        while os.getppid() == parent:
            time.sleep(0.01)
    arm()
    (folder / "armed").touch()
    time.sleep(1.0)
    (folder / "survived").touch()
    os._exit(0)
if when == "after_arming":
    while not (folder / "armed").exists():
        time.sleep(0.01)
elif when == "never":
    os.wait()
"""


def _run(folder: Path, when: str) -> Path:
    subprocess.run([sys.executable, "-c", CHILD, str(folder), when], check=True, timeout=30)
    deadline = time.monotonic() + 10
    while not (folder / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    child = int((folder / "child.pid").read_text())
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child), "the child outlived the deadline"
    return folder / "survived"


def test_a_child_whose_parent_died_before_it_armed_exits_at_once(tmp_path):
    assert not _run(tmp_path, "before_arming").exists()
    assert not (tmp_path / "armed").exists()


def test_an_armed_child_is_killed_when_its_parent_dies(tmp_path):
    assert not _run(tmp_path, "after_arming").exists()
    assert (tmp_path / "armed").exists()


def test_an_armed_child_of_a_living_parent_runs_to_the_end(tmp_path):
    assert _run(tmp_path, "never").exists()
