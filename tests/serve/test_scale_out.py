"""Scaling out serving: the parallel flags each engine gets from --gpus, least-busy routing over
replicas, and two real llama.cpp replicas sharing streams and surviving a SIGKILL of one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve.engines import LlamaCppEngine, VllmEngine
from serve.engines.llamacpp import gpu_split_flags
from serve.launcher import serve_models
from serve.protocol import GatewayError
from serve.replicas import Replica, ReplicaPool, ScaleOut, device_groups
from tests.serve.test_engines import vllm_args
from toolkit.core.errors import TuneserveError

SNAPSHOT = json.loads(
    (Path(__file__).parents[2] / "serve/engines/vllm_cli_snapshot.json").read_text()
)
HI = [{"role": "user", "content": "Say hi"}]


def _pairs(argv: list[str]) -> dict[str, str]:
    return dict(zip(argv, argv[1:], strict=False))


@pytest.mark.parametrize(
    ("gpus", "stages", "sizes"), [(2, 1, (2, 1)), (4, 2, (2, 2)), (None, 2, (1, 2))]
)
def test_gpus_map_to_vllm_parallel_sizes_its_parser_accepts(tmp_path, gpus, stages, sizes):
    tensor, pipeline = ScaleOut(gpus=gpus, pipeline_parallel=stages).vllm_sizes()
    assert (tensor, pipeline) == sizes
    engine = VllmEngine(
        name="m",
        model_path=tmp_path,
        tensor_parallel_size=tensor,
        pipeline_parallel_size=pipeline,
    )
    argv = vllm_args(engine)
    flags = [token for token in argv if token.startswith("-")]
    assert not [flag for flag in flags if flag not in SNAPSHOT["options"]]
    assert _pairs(argv)["--tensor-parallel-size"] == str(tensor)
    assert _pairs(argv).get("--pipeline-parallel-size", "1") == str(pipeline)


def test_gpus_that_cannot_form_equal_pipeline_stages_are_an_error():
    with pytest.raises(TuneserveError, match="equal stages"):
        ScaleOut(gpus=3, pipeline_parallel=2).vllm_sizes()


def test_llama_cpp_python_gets_a_layer_split_its_parser_accepts(base_gguf, monkeypatch):
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "off")  # else a built llama-server is preferred
    argv = LlamaCppEngine(name="smol", model_path=base_gguf, gpus=2, api_key="k").command()
    pairs = _pairs(argv)
    assert pairs["--n_gpu_layers"] == "-1" and pairs["--split_mode"] == "1"
    assert argv[argv.index("--tensor_split") + 1 : argv.index("--tensor_split") + 3] == ["1", "1"]
    help_text = subprocess.run(
        [sys.executable, "-m", "llama_cpp.server", "--help"], capture_output=True, text=True
    ).stdout
    for flag in ("--n_gpu_layers", "--split_mode", "--tensor_split"):
        assert flag in help_text
    # the server's own parser reads the list and the flags after it, as `python -m` would
    import argparse

    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, Settings

    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    settings = parse_model_from_args(ModelSettings, parser.parse_args(argv[3:]))
    assert settings.tensor_split == [1.0, 1.0] and settings.split_mode == 1
    assert settings.n_gpu_layers == -1


def test_native_llama_server_gets_its_own_spelling():
    assert gpu_split_flags(0, native=True) == []
    assert gpu_split_flags(2, native=True) == [
        "--n-gpu-layers", "999", "--split-mode", "layer", "--tensor-split", "1,1",
    ]  # fmt: skip


def test_each_replica_gets_its_own_block_of_gpus(monkeypatch):
    assert device_groups(1, 4, None) == [None]
    assert device_groups(3, None, None) == [None, None, None]
    assert device_groups(2, 2, None) == ["0,1", "2,3"]
    assert device_groups(2, 1, "4,5,6") == ["4", "5"]
    with pytest.raises(TuneserveError, match="needs 4 GPUs"):
        device_groups(2, 2, "0,1")
    engine = LlamaCppEngine(name="m", model_path=Path("m.gguf"), visible_devices="2,3")
    assert engine.env()["CUDA_VISIBLE_DEVICES"] == "2,3"


class FakeSupervisor:
    def __init__(self) -> None:
        self.ready, self.restarts = True, 0
        self.exited = False  # the engine process is alive


def _pool(count: int) -> ReplicaPool:
    replicas = [Replica(i, f"http://r{i}", FakeSupervisor()) for i in range(count)]
    return ReplicaPool("m", replicas)  # type: ignore[arg-type]


def test_the_least_busy_live_replica_is_picked_and_ties_rotate():
    pool = _pool(3)
    pool.replicas[0].in_flight, pool.replicas[1].in_flight = 2, 1
    assert pool.pick().index == 2
    pool.replicas[2].supervisor.ready = False  # down: skipped however idle
    assert pool.pick().index == 1
    idle = _pool(2)
    assert {idle.pick().index for _ in range(4)} == {0, 1}


def test_an_unreachable_replica_is_ejected_retried_elsewhere_and_rejoins_after_restart():
    pool = _pool(2)
    calls: list[str] = []

    async def send(request, prepared):  # noqa: ANN001
        calls.append(prepared.upstream)
        if prepared.upstream == "http://r0":
            raise GatewayError(503, "unreachable", unsent=True)
        return "ok"

    class Prepared:
        upstream = None

    pool.replicas[1].in_flight = 5  # r0 looks idler, so it is tried first
    assert asyncio.run(pool.send(send, None, Prepared())) == "ok"
    assert calls == ["http://r0", "http://r1"]
    assert not pool.replicas[0].up and pool.replicas[0].in_flight == 0
    pool.replicas[0].supervisor.restarts = 1  # the supervisor brought a new process up
    assert pool.replicas[0].up
    pool.replicas[1].supervisor.ready = False
    pool.replicas[0].eject()
    with pytest.raises(GatewayError, match="every replica"):
        asyncio.run(pool.send(send, None, Prepared()))


def test_a_request_that_reached_a_replica_is_not_sent_to_another():
    """The replica broke off after the request was written: it may be generating it, so the
    503 goes to the client instead of a second generation on the other replica."""
    pool = _pool(2)
    calls: list[str] = []

    async def send(request, prepared):  # noqa: ANN001
        calls.append(prepared.upstream)
        raise GatewayError(503, "the engine closed the connection")  # sent: not `unsent`

    class Prepared:
        upstream = None

    with pytest.raises(GatewayError, match="closed the connection"):
        asyncio.run(pool.send(send, None, Prepared()))
    assert len(calls) == 1 and sum(not r.up for r in pool.replicas) == 1  # ejected all the same


def test_a_request_written_to_a_replica_that_died_goes_to_another():
    """The connection broke because the engine process died (killed, crashed): nothing can be
    generating the request there, so it is sent to the other replica instead of a 503."""
    pool = _pool(2)
    calls: list[str] = []

    async def send(request, prepared):  # noqa: ANN001
        calls.append(prepared.upstream)
        if len(calls) == 1:
            dead = next(r for r in pool.replicas if r.upstream == prepared.upstream)
            dead.supervisor.exited = True
            raise GatewayError(503, "the engine closed the connection")  # sent: not `unsent`
        return "answered"

    class Prepared:
        upstream = None

    assert asyncio.run(pool.send(send, None, Prepared())) == "answered"
    assert len(set(calls)) == 2 and sum(not r.up for r in pool.replicas) == 1


@pytest.fixture(scope="module")
def two_replicas(base_gguf, tmp_path_factory):
    with serve_models(
        [f"smol={base_gguf}"], replicas=2, log_dir=tmp_path_factory.mktemp("logs")
    ) as served:
        yield served


async def _streams(base_url: str, count: int, max_tokens: int) -> list[str]:
    async def one(client: httpx.AsyncClient, index: int) -> str:
        body = {
            "model": "smol",
            "messages": [{"role": "user", "content": f"Count to {index + 3}"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        text = []
        async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data:") and line != "data: [DONE]":
                    chunk = json.loads(line[5:])
                    assert "error" not in chunk, chunk
                    text.append(chunk["choices"][0]["delta"].get("content") or "")
        return "".join(text)

    async with httpx.AsyncClient(timeout=300) as client:
        return await asyncio.gather(*(one(client, i) for i in range(count)))


@pytest.mark.slow
def test_two_replicas_share_sixteen_concurrent_streams(two_replicas):
    pool = two_replicas.gateway.routes["smol"].pool
    before = [replica.served for replica in pool.replicas]
    texts = asyncio.run(_streams(two_replicas.base_url, 16, 8))
    assert len(texts) == 16 and all(texts)
    served = [replica.served - old for replica, old in zip(pool.replicas, before, strict=True)]
    print(f"streams per replica: {served}")
    assert sum(served) == 16 and min(served) >= 4, served  # least-busy: both carry a share
    assert all(replica.in_flight == 0 for replica in pool.replicas)
    metrics = httpx.get(f"{two_replicas.root_url}/metrics").text
    assert 'tuneserve_replica_served{model="smol",replica="1"}' in metrics


@pytest.mark.slow
def test_killing_a_replica_keeps_the_service_up_and_it_rejoins(two_replicas):
    pool = two_replicas.gateway.routes["smol"].pool
    victim, survivor = pool.replicas
    old_pid = victim.supervisor.pid
    os.kill(old_pid, signal.SIGKILL)
    before = survivor.served
    texts = asyncio.run(_streams(two_replicas.base_url, 4, 4))  # right away: no 503
    assert all(texts) and survivor.served - before == 4  # the victim was skipped or retried
    deadline = time.monotonic() + 120
    while not (victim.supervisor.ready and victim.up) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim.supervisor.restarts == 1 and victim.supervisor.pid != old_pid and victim.up
    assert httpx.get(f"{two_replicas.root_url}/health").status_code == 200
    before = victim.served
    asyncio.run(_streams(two_replicas.base_url, 8, 4))
    assert victim.served - before >= 2, "the restarted replica did not rejoin the rotation"


def test_cli_refuses_pipeline_stages_for_llama_cpp_before_starting_anything(base_gguf, tmp_path):
    command = [sys.executable, "-m", "toolkit.cli", "serve", str(base_gguf), "--port", "0"]
    command += ["--gpus", "2", "--pipeline-parallel", "2", "--replicas", "2"]
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "error: --pipeline-parallel is a vLLM option" in done.stderr
    assert not (tmp_path / "logs").exists()  # no engine was started
