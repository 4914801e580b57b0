"""Engines answer only the gateway that started them: each gets a random key through its
environment (never its command line, which `ps` and the engine log show), and a local
process calling the engine's port directly is refused."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from serve.engines import LlamaCppEngine, VllmEngine
from serve.launcher import serve_models
from tests.process_tree import descendants
from tests.serve.conftest import llama_engines

HI = {"model": "smol", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}


@pytest.mark.slow  # two llama.cpp engines read the GGUF's vocabulary: ~3 s each
def test_every_engine_gets_its_own_key_through_its_environment(base_gguf, tmp_path, monkeypatch):
    folder = tmp_path / "merged16"
    folder.mkdir()
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "/opt/llama/llama-server")
    native = LlamaCppEngine(name="a", model_path=base_gguf)
    assert native.native_binary  # decided once per engine
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "off")
    python = LlamaCppEngine(name="b", model_path=base_gguf)
    vllm = VllmEngine(name="c", model_path=folder)
    keys = [engine.api_key for engine in (native, python, vllm)]
    assert all(key and len(key) >= 32 for key in keys) and len(set(keys)) == 3
    assert native.env()["LLAMA_API_KEY"] == native.api_key  # llama-server's --api-key env
    assert python.env()["API_KEY"] == python.api_key  # llama-cpp-python's settings env
    assert vllm.env()["VLLM_API_KEY"] == vllm.api_key  # vLLM: args.api_key or VLLM_API_KEY
    for engine in (native, python, vllm):
        assert engine.api_key not in " ".join(engine.argv())
        assert "--api-key" not in engine.argv() and "--api_key" not in engine.argv()
        assert engine.api_key not in repr(engine)


@pytest.fixture(scope="module")
def keyed(llama_backend, base_gguf, tmp_path_factory):
    """A gateway without a client key: the engine behind it must still refuse strangers."""
    logs = tmp_path_factory.mktemp("logs")
    with ExitStack() as stack:
        with llama_engines(llama_backend):
            served = stack.enter_context(serve_models([f"smol={base_gguf}"], log_dir=logs))
        yield served, logs


@pytest.mark.slow
def test_the_engine_refuses_a_caller_that_skips_the_gateway(keyed):
    served, _ = keyed
    route = served.gateway.routes["smol"]
    engine = route.engine
    direct = f"{engine.base_url}/v1/chat/completions"
    assert httpx.post(direct, json=HI, timeout=60).status_code == 401
    wrong = {"authorization": "Bearer not-the-key"}
    assert httpx.post(direct, json=HI, headers=wrong, timeout=60).status_code == 401
    completions = f"{engine.base_url}/v1/completions"
    assert httpx.post(completions, json={**HI, "prompt": "hi"}, timeout=60).status_code == 401
    through = httpx.post(f"{served.base_url}/chat/completions", json=HI, timeout=120)
    assert through.status_code == 200, through.text  # the gateway sends the engine's key


@pytest.mark.slow
def test_the_engine_key_is_not_in_ps_nor_in_the_engine_log(keyed):
    served, logs = keyed
    route = served.gateway.routes["smol"]
    key = route.engine.api_key
    pids = {route.supervisor.pid} | descendants(route.supervisor.pid)
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        assert key.encode() not in cmdline and b"api" not in cmdline.lower()
    # what `ps -eww -o args` shows any local user: every process's command line
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert key.encode() not in cmdline.read_bytes(), cmdline
        except OSError:  # the process has exited since
            continue
    text = "".join(path.read_text(errors="replace") for path in logs.glob("*.log"))
    assert "--- start:" in text and key not in text
