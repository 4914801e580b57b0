"""Engine supervision: readiness errors quote the log, crash -> 503 -> restart -> recovery,
and SIGTERM of `tuneserve serve` leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from serve.engines import LlamaCppEngine, free_port
from serve.launcher import serve_models
from serve.supervisor import Supervisor
from tests.process_tree import alive, descendants
from tests.serve.conftest import llama_engines
from toolkit.core.errors import TuneserveError

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "Say hi"}]


def test_an_engine_that_cannot_start_is_reported_with_its_log(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all")
    supervisor = Supervisor(LlamaCppEngine("broken", broken), tmp_path / "broken.log")
    with pytest.raises(TuneserveError) as caught:
        supervisor.start()
    assert "exited with code" in caught.value.message
    assert "broken.gguf" in caught.value.message  # quoted from the engine's own log
    supervisor.stop()


def squat(port: int) -> socket.socket:
    """Listen on `port` as another program would, so an engine cannot bind it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past a killed engine's TIME_WAIT
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_an_engine_whose_port_was_taken_starts_on_a_fresh_one(tmp_path, base_gguf):
    port = free_port()
    engine = LlamaCppEngine("smol", base_gguf, port=port)
    supervisor = Supervisor(engine, tmp_path / "smol.log", restart=False)
    with squat(port):
        try:
            supervisor.start()
            assert engine.port != port
            models = httpx.get(
                engine.readiness_url, headers={"Authorization": f"Bearer {engine.api_key}"}
            )
            assert models.status_code == 200
        finally:
            supervisor.stop()
    assert supervisor.log_path.read_text().count("--- start:") == 2


def test_a_non_loopback_bind_needs_an_api_key(base_gguf):
    with (
        pytest.raises(TuneserveError, match="without an API key"),
        serve_models([base_gguf], host="0.0.0.0"),
    ):
        pass


CANCELLED = ("Disconnected from client", "cancel task")


@pytest.fixture(scope="module")
def own_gateway(llama_backend, base_gguf, tmp_path_factory):
    """A gateway of its own (per llama.cpp backend): these tests kill and disconnect its engine."""
    with ExitStack() as stack:
        with llama_engines(llama_backend):
            served = stack.enter_context(
                serve_models([f"smol={base_gguf}"], log_dir=tmp_path_factory.mktemp("logs"))
            )
        yield served


def test_a_client_that_goes_away_cancels_the_engine_stream(own_gateway):
    body = {"model": "smol", "messages": HI, "max_tokens": 1500, "stream": True}
    supervisor = own_gateway.supervisors["smol"]
    with httpx.stream("POST", f"{own_gateway.base_url}/chat/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    deadline = time.monotonic() + 30
    # llama-cpp-python's server logs the first, a native llama-server the second
    while not any(mark in supervisor.log_path.read_text() for mark in CANCELLED):
        assert time.monotonic() < deadline, "the engine kept generating for a gone client"
        time.sleep(0.2)


def test_crash_gives_503_then_the_engine_is_restarted(own_gateway):
    served = own_gateway
    client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
    supervisor = served.supervisors["smol"]
    old_pid = supervisor.pid
    supervisor.kill()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="smol", messages=HI, max_tokens=2)
    assert caught.value.status_code == 503
    assert caught.value.body["type"] == "service_unavailable"
    assert httpx.get(f"{served.root_url}/health").status_code == 503
    deadline = time.monotonic() + 120
    while not supervisor.ready and time.monotonic() < deadline:
        time.sleep(0.2)
    assert supervisor.ready and supervisor.pid != old_pid and supervisor.restarts == 1
    reply = client.chat.completions.create(model="smol", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content is not None
    assert httpx.get(f"{served.root_url}/health").status_code == 200


def test_a_restart_whose_port_was_taken_meanwhile_moves_the_route_along(own_gateway):
    served = own_gateway
    client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
    supervisor = served.supervisors["smol"]
    old_port, restarts = supervisor.engine.port, supervisor.restarts
    supervisor.kill()
    with squat(old_port):  # taken while the engine was down (the restart waits 1 s)
        deadline = time.monotonic() + 120
        while not supervisor.ready and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.ready and supervisor.restarts == restarts + 1
        assert supervisor.engine.port != old_port
        reply = client.chat.completions.create(model="smol", messages=HI, max_tokens=2)
        assert reply.choices[0].message.content is not None


def test_sigterm_of_tuneserve_serve_leaves_no_process(base_gguf, tmp_path):
    port = free_port()
    tuneserve = Path(sys.executable).parent / "tuneserve"  # the installed console script
    command = [str(tuneserve), "serve", f"smol={base_gguf}", "--port", str(port)]
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.3)
        children = descendants(process.pid)
        assert children, "the engine runs as a child of tuneserve serve"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        time.sleep(0.5)
        assert not [pid for pid in children if alive(pid)]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["/no/such/model.gguf"], "does not exist"),
        (["--host", "0.0.0.0", "{gguf}"], "without an API key"),
        (["--engine", "vllm", "{gguf}"], "vLLM serves merged16 model folders"),
        (
            ["--engine", "vllm", "{folder}"],
            "vllm engine",
        ),  # not installed here; fails to load elsewhere
    ],
)
def test_serve_command_reports_user_errors_in_one_line(base_gguf, tmp_path, arguments, message):
    from click.testing import CliRunner

    from toolkit.cli import main

    folder = tmp_path / "merged16"
    folder.mkdir()
    arguments = [a.format(gguf=base_gguf, folder=folder) for a in arguments]
    result = CliRunner().invoke(main, ["serve", *arguments])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and message in result.output
    assert "Traceback" not in result.output
