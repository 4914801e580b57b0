"""A stand-in command put first on PATH for one test (e.g. a `vllm` that cannot run here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def put_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str, keep_path: bool
) -> Path:
    """`script` installed as the command `name` (this Python's folder on PATH too, for the
    `#!` it names); returns the folder it logs into, exported as FAKE_<NAME>_LOG. Without
    `keep_path` nothing else is on PATH, so a real command of that name cannot answer."""
    bin_dir, log = tmp_path / "bin", tmp_path / "launches"
    bin_dir.mkdir()
    log.mkdir()
    command = bin_dir / name
    command.write_text(script)
    command.chmod(0o755)
    rest = f":{os.environ['PATH']}" if keep_path else ""
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}{rest}")
    monkeypatch.setenv(f"FAKE_{name.upper()}_LOG", str(log))
    return log
