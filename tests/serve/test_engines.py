"""Engine launchers: llama.cpp and vLLM command lines, vLLM's flags pinned to its own parser."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import serve.engines.base
from serve.engines import LlamaCppEngine, VllmEngine, free_port, pick_engine
from serve.engines.base import keep_free
from serve.engines.vllm import lora_rank_bound
from toolkit.core.errors import TuneserveError
from toolkit.train.templates import CHATML, QWEN3

SNAPSHOT = json.loads(
    (Path(__file__).parents[2] / "serve/engines/vllm_cli_snapshot.json").read_text()
)


def _model_folder(tmp_path: Path, template: str) -> Path:
    folder = tmp_path / "merged16"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


def _adapter(tmp_path: Path, rank: int) -> Path:
    adapter = tmp_path / f"adapter{rank}"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return adapter


def _flags(argv: list[str]) -> list[str]:
    return [token for token in argv if token.startswith("-")]


def vllm_args(engine: VllmEngine) -> list[str]:
    """What `vllm` itself receives: the command after the launcher (`vllm` or `python -m ...`)."""
    return engine.argv()[len(engine.launcher()) :]


def test_vllm_runs_from_its_module_when_no_vllm_script_is_on_path(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("PATH", str(tmp_path))
    assert VllmEngine.launcher() == [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    (tmp_path / "vllm").write_text("#!/bin/sh\n")
    (tmp_path / "vllm").chmod(0o755)
    assert VllmEngine.launcher() == ["vllm"]


@pytest.mark.parametrize("embeddings", [False, True])
@pytest.mark.parametrize("template", [QWEN3, CHATML])
def test_every_vllm_flag_the_launcher_emits_is_in_vllms_parser(tmp_path, template, embeddings):
    engine = VllmEngine(
        name="tuned",
        model_path=_model_folder(tmp_path, template),
        port=8123,
        api_key="k",
        embeddings=embeddings,
        max_model_len=8192,
        tensor_parallel_size=2,
        lora_modules={"a": _adapter(tmp_path, 32), "b": _adapter(tmp_path, 20)},
    )
    argv = vllm_args(engine)
    assert argv[:2] == ["serve", str(engine.model_path)]
    unknown = [flag for flag in _flags(argv) if flag not in SNAPSHOT["options"]]
    assert not unknown, f"not options of vllm serve {SNAPSHOT['vllm_version']}: {unknown}"


def test_vllm_command_carries_what_serving_needs(tmp_path):
    engine = VllmEngine(
        name="tuned",
        model_path=_model_folder(tmp_path, QWEN3),
        port=8123,
        lora_modules={"adapter": _adapter(tmp_path, 20)},
    )
    argv = engine.command()
    pairs = dict(zip(argv, argv[1:], strict=False))
    assert pairs["--host"] == "127.0.0.1"  # vllm binds all interfaces unless told
    assert pairs["--port"] == "8123" and pairs["--served-model-name"] == "tuned"
    assert pairs["--reasoning-parser"] == "qwen3"
    assert pairs["--max-lora-rank"] == "32"
    assert pairs["--lora-modules"] == f"adapter={tmp_path / 'adapter20'}"
    assert "--enable-lora" in argv and "--api-key" not in argv
    assert engine.readiness_url == "http://127.0.0.1:8123/health"


def test_vllm_parses_hermes_tool_calls_and_keeps_the_models_context(tmp_path):
    argv = VllmEngine(name="m", model_path=_model_folder(tmp_path, QWEN3)).command()
    pairs = dict(zip(argv, argv[1:], strict=False))
    assert "--enable-auto-tool-choice" in argv and pairs["--tool-call-parser"] == "hermes"
    assert "--max-model-len" not in argv  # vLLM then takes the model's own context
    argv = VllmEngine(name="m", model_path=tmp_path, max_model_len=2048).command()
    assert dict(zip(argv, argv[1:], strict=False))["--max-model-len"] == "2048"


def test_a_vllm_embeddings_engine_runs_the_pooling_runner(tmp_path):
    argv = VllmEngine(
        name="e", model_path=_model_folder(tmp_path, QWEN3), embeddings=True
    ).command()
    pairs = dict(zip(argv, argv[1:], strict=False))
    assert pairs["--runner"] == "pooling" and pairs["--convert"] == "embed"
    assert "--enable-auto-tool-choice" not in argv and "--reasoning-parser" not in argv


def test_no_reasoning_parser_for_a_template_without_thinking(tmp_path):
    argv = VllmEngine(name="m", model_path=_model_folder(tmp_path, CHATML)).command()
    assert "--reasoning-parser" not in argv


@pytest.mark.parametrize(("rank", "bound"), [(1, 8), (8, 8), (9, 16), (32, 32), (200, 256)])
def test_lora_rank_bound(rank, bound):
    assert lora_rank_bound(rank) == bound


@pytest.fixture
def python_llama(monkeypatch):
    """llama-cpp-python's server even where a native llama-server exists."""
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "off")


def test_llama_cpp_python_command(base_gguf, python_llama):
    engine = LlamaCppEngine(name="smol", model_path=base_gguf, port=9000)
    argv = engine.command()
    pairs = dict(zip(argv, argv[1:], strict=False))
    assert pairs["--interrupt_requests"] == "False"  # else concurrent streams get cut
    assert pairs["--host"] == "127.0.0.1" and pairs["--model_alias"] == "smol"
    assert engine.extra_sampling() == {"repeat_penalty": 1.0}


def test_llama_cpp_python_flags_exist_in_its_parser(base_gguf, python_llama):
    import subprocess
    import sys

    help_text = subprocess.run(
        [sys.executable, "-m", "llama_cpp.server", "--help"], capture_output=True, text=True
    ).stdout
    argv = LlamaCppEngine(name="smol", model_path=base_gguf, api_key="k").command()
    assert all(flag in help_text for flag in _flags(argv))


def test_native_llama_server_is_preferred_when_present(base_gguf, monkeypatch):
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "/opt/llama/llama-server")
    engine = LlamaCppEngine(name="smol", model_path=base_gguf)
    argv = engine.command()
    assert argv[0] == "/opt/llama/llama-server" and "--jinja" in argv
    assert not engine.renders_chat  # native server applies chat_template_kwargs itself
    pairs = dict(zip(argv, argv[1:], strict=False))
    assert pairs["--parallel"] == "4" and "--cont-batching" in argv and "--metrics" in argv
    assert pairs["--reasoning-format"] == "none"  # the gateway splits <think> for every engine


def test_every_request_may_use_the_trained_context(base_gguf, monkeypatch):
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "/opt/llama/llama-server")
    argv = LlamaCppEngine(name="smol", model_path=base_gguf).command()
    pairs = dict(zip(argv, argv[1:], strict=False))
    # SmolLM2 was trained with 8192 tokens; each of the 4 slots gets a cache of that size (a
    # unified cache would make greedy answers depend on the batch)
    assert pairs["-c"] == str(4 * 8192) and pairs["--parallel"] == "4"
    assert "--no-kv-unified" in argv and "--kv-unified" not in argv
    argv = LlamaCppEngine(name="smol", model_path=base_gguf, n_ctx=1024).command()
    assert dict(zip(argv, argv[1:], strict=False))["-c"] == str(4 * 1024)


def test_llama_cpp_python_gets_the_trained_context(base_gguf, python_llama):
    argv = LlamaCppEngine(name="smol", model_path=base_gguf).command()
    assert dict(zip(argv, argv[1:], strict=False))["--n_ctx"] == "8192"


def test_embeddings_engines(base_gguf, monkeypatch):
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "/opt/llama/llama-server")
    argv = LlamaCppEngine(name="e", model_path=base_gguf, embeddings=True).command()
    pairs = dict(zip(argv, argv[1:], strict=False))
    assert "--embeddings" in argv and pairs["--pooling"] == "mean"  # a chat model has none
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "off")
    with pytest.raises(TuneserveError, match="native llama-server"):
        LlamaCppEngine(name="e", model_path=base_gguf, embeddings=True).command()


@pytest.mark.slow  # runs llama-server --help and reads the GGUF twice: ~5 s
def test_native_llama_server_flags_exist_in_its_parser(base_gguf):
    import subprocess

    from serve.engines.llamacpp import native_llama_server

    binary = native_llama_server()
    assert binary, "make install builds the native llama-server (CI's engine)"
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    for embeddings in (False, True):
        argv = LlamaCppEngine(
            name="smol", model_path=base_gguf, api_key="k", embeddings=embeddings
        ).command()
        assert argv[0] == binary
        assert [flag for flag in _flags(argv) if flag not in help_text] == []


def test_off_forces_llama_cpp_python(base_gguf, python_llama):
    engine = LlamaCppEngine(name="smol", model_path=base_gguf)
    assert engine.native_binary is None and engine.command()[1:3] == ["-m", "llama_cpp.server"]


def test_pick_engine(base_gguf, tmp_path):
    assert pick_engine(str(base_gguf)) == "llamacpp"
    with pytest.raises(TuneserveError, match="GGUF"):
        pick_engine(str(base_gguf), "vllm")
    with pytest.raises(TuneserveError, match="not one"):
        pick_engine(str(tmp_path), "llamacpp")
    assert pick_engine(str(tmp_path), "vllm") == "vllm"


def test_free_port_never_hands_out_one_port_twice():
    # Engines bind their ports only once loaded, so without memory the OS gives the same free
    # port again (a thousand draws from ~14k ports: dozens of repeats)
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_free_port_skips_the_gateways_own_port(monkeypatch):
    # The OS cannot be made to offer a given port, so its answers are scripted: the gateway's
    # port first (nobody has bound it yet), then another
    with socket.socket() as sock:  # a port as `serve --port` names it, not from free_port
        sock.bind(("127.0.0.1", 0))
        gateway_port = sock.getsockname()[1]
    offers = iter([gateway_port, gateway_port + 1])

    class Offered:
        def __init__(self, *args):
            self.port = next(offers)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            pass

        def getsockname(self):
            return ("127.0.0.1", self.port)

    keep_free(gateway_port)
    monkeypatch.setattr(serve.engines.base.socket, "socket", Offered)
    assert free_port() == gateway_port + 1
