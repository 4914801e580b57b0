"""CLI conventions: instant --help, one-line errors with exit 2, init and doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import toolkit.cli.commands
from serve.engines.llamacpp import native_llama_server
from tests.conftest import DEMO_RECIPE
from toolkit.cli.main import COMMANDS, main
from toolkit.recipe.loader import load_recipe

HEAVY = ("torch", "transformers", "peft", "trl", "unsloth", "vllm", "llama_cpp", "datasets")


def tuneserve(*args: str, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from toolkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"heavy = {HEAVY!r}\n"
        "print('HEAVY=' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY=", done.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and f"tuneserve {command}" in result.output


def test_user_error_is_one_line_with_hint_and_exit_2(tmp_path):
    (tmp_path / "recipe.yaml").write_text("x")
    done = tuneserve("init", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'recipe.yaml'} already exists",
        "hint: pass --force to overwrite it",
    ]
    assert "Traceback" not in done.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    (tmp_path / "recipe.yaml").write_text("x")
    done = tuneserve("--debug", "init", str(tmp_path))
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_unknown_command_and_option_are_usage_errors():
    assert CliRunner().invoke(main, ["frobnicate"]).exit_code == 2
    assert CliRunner().invoke(main, ["doctor", "--nope"]).exit_code == 2


def test_init_writes_a_recipe_and_dataset(tmp_path):
    result = CliRunner().invoke(main, ["init", str(tmp_path / "proj")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "proj" / "recipe.yaml").is_file()
    rows = (tmp_path / "proj" / "data" / "sample.jsonl").read_text().splitlines()
    assert len(rows) >= 20 and all(json.loads(r)["messages"] for r in rows)


def test_doctor_json_parses_and_reports_this_machine():
    done = tuneserve("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["packages"]["transformers"] and report["packages"]["llama_cpp"]
    assert report["backends"]["hf"] is True
    assert report["engines"]["llamacpp"] is True
    assert isinstance(report["gpu"]["cuda"], bool) and report["disk"]["free_gib"] > 0
    native = native_llama_server()
    assert report["llama_server"]["native"] is bool(native)
    assert report["llama_server"]["path"] == native


def test_doctor_says_which_llama_cpp_server_serve_would_run(tmp_path):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    shown = tuneserve("doctor", env_extra={"TUNESERVE_LLAMA_SERVER": str(binary)}).stdout
    assert f"llama.cpp   native llama-server {binary}" in shown
    off = tuneserve("doctor", "--json", env_extra={"TUNESERVE_LLAMA_SERVER": "off"}).stdout
    assert json.loads(off)["llama_server"]["native"] is False
    assert "build_llama_server" in json.loads(off)["llama_server"]["why"]


def test_an_internal_error_has_its_own_exit_code(monkeypatch):
    """A bug in the tool must not look like a failed regression gate (exit 1) in CI."""
    import toolkit.cli.doctor

    def broken() -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(toolkit.cli.doctor, "diagnose", broken)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 70, result.output
    assert "error: internal error: RuntimeError: boom" in result.output


def test_help_documents_every_exit_code():
    from toolkit.core.errors import EXIT_CHECK_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE

    shown = CliRunner().invoke(main, ["--help"]).output
    codes = (0, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED)
    assert len(set(codes)) == len(codes)
    section = shown.split("Exit codes:", 1)[1]
    for code in codes:
        assert f"\n    {code} " in section, shown


def test_demo_runs_the_bundled_demo_recipe(monkeypatch):
    # The run itself is the pipeline tests' (DEMO_RECIPE); here, that `tuneserve demo` finds it
    # (it looked beside its own module once that moved to toolkit/cli/: "does not exist").
    ran = []
    monkeypatch.setattr(
        toolkit.cli.commands, "run_and_report", lambda recipe, *_: ran.append(recipe)
    )
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert ran == [load_recipe(DEMO_RECIPE, ())]
