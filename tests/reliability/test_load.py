"""Load: many concurrent streaming clients through the real gateway with 0 errors, no unbounded
growth of its open files or memory, and clients that go away mid-stream free their upstream
request (counted at the fake engine). Traffic stays on 127.0.0.1; every loop has a deadline."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.reliability import processes
from tests.reliability.conftest import API_KEY, engine_stats
from tests.reliability.counts import measure, record

AUTH = {"authorization": f"Bearer {API_KEY}"}
# Bounds on growth across a run, after a warm-up that filled the connection pools: a leak of
# one descriptor or one buffer per request would pass them within seconds at these rates.
FD_GROWTH = 16
RSS_GROWTH = 48 * 2**20


@dataclass
class Tally:
    served: int = 0
    abandoned: int = 0
    errors: list[str] = field(default_factory=list)


async def _one_stream(client: httpx.AsyncClient, url: str, body: dict, abandon: bool, tally: Tally):
    """One streamed completion read to [DONE] (or left after 2 chunks when `abandon`)."""
    chunks, stage = 0, "connecting"
    try:
        async with client.stream("POST", url, json=body, headers=AUTH) as response:
            stage = "streaming"
            if response.status_code != 200:
                tally.errors.append(f"{response.status_code}: {(await response.aread())[:200]}")
                return
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                if "error" in json.loads(line[6:]):
                    tally.errors.append(line[:200])
                    return
                chunks += 1
                if abandon and chunks == 2:
                    tally.abandoned += 1
                    return  # leaving the block closes the connection mid-stream
            if not done or not chunks:
                tally.errors.append(f"stream ended without [DONE] after {chunks} chunks")
                return
            tally.served += 1
    except httpx.HTTPError as exc:
        cause = exc.__cause__ or exc.__context__
        tally.errors.append(f"{type(exc).__name__} while {stage} after {chunks} chunks: {cause!r}")


async def _drive(
    url: str, body: dict, clients: int, seconds: float, abandon_every: int, abandon_tokens: int
) -> Tally:
    """`clients` concurrent loops of streamed requests for `seconds`; every `abandon_every`-th
    request of a client asks for `abandon_tokens` and is dropped after two chunks (0: none)."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    # idle connections expire well before the gateway's keep-alive (75 s) would close them under
    # a request (the race every HTTP/1.1 client avoids this way)
    limits = httpx.Limits(
        max_connections=clients + 8, max_keepalive_connections=clients + 8, keepalive_expiry=2.0
    )
    timeout = httpx.Timeout(120.0, connect=30.0)

    async def loop(client: httpx.AsyncClient, index: int) -> None:
        count = index  # staggered: some clients abandon their very first request
        while time.monotonic() < deadline:
            abandon = bool(abandon_every) and count % abandon_every == 0
            count += 1
            # an abandoned request asks for more than it will read: the fake engine can only
            # finish it by being told the client went away
            sent = {**body, "max_tokens": abandon_tokens} if abandon else body
            await _one_stream(client, url, sent, abandon, tally)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(loop(client, index) for index in range(clients)))
    return tally


def _settle(fake_engine, timeout: float = 30.0) -> dict:
    """Wait until the fake engine has nothing in flight; return its stats."""
    deadline = time.monotonic() + timeout
    while (stats := engine_stats(fake_engine))["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return stats


def _footprint(child: processes.Child, model: str) -> tuple[int, int]:
    """Open fds and RSS of the gateway at rest: after every keep-alive (5 s at the engine and
    the gateway) has expired and one request has let its pool drop the expired connections."""
    time.sleep(6.0)
    body = {"model": model, "prompt": "x", "max_tokens": 1}
    assert httpx.post(f"{child.url}/v1/completions", json=body, headers=AUTH, timeout=60).is_success
    time.sleep(0.5)
    return processes.open_fds(child.pid), processes.rss_bytes(child.pid)


@pytest.fixture(scope="module")
def gateway_process(fake_engine, tmp_path_factory):
    """The real gateway in a process of its own, in front of the fake engine."""
    log = tmp_path_factory.mktemp("gateway-process") / "gateway.log"
    with processes.gateway_over(fake_engine.url, log, API_KEY) as child:
        yield child


CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.slow
def test_256_streaming_clients_for_60_seconds(gateway_process, fake_engine):
    url = f"{gateway_process.url}/v1/chat/completions"
    body = {**CHAT, "max_tokens": 16}  # 16 chunks, 5 ms apart at the engine
    cold = _footprint(gateway_process, "fake")
    warm_tally = asyncio.run(_drive(url, body, 256, 5, 4, 60_000))
    assert not warm_tally.errors, warm_tally.errors[:5]
    _settle(fake_engine)
    before = _footprint(gateway_process, "fake")
    engine_before = engine_stats(fake_engine)

    started = time.monotonic()
    tally = asyncio.run(_drive(url, body, 256, 60, 4, 60_000))
    elapsed = time.monotonic() - started
    engine_after = _settle(fake_engine)
    after = _footprint(gateway_process, "fake")

    record("streamed requests served to 256 clients in 60 s (fake engine)", tally.served,
           group="requests served")  # fmt: skip
    record("streams abandoned mid-way by their client (upstream freed)", tally.abandoned,
           group="faults survived")  # fmt: skip
    record("errors under load (256 clients, fake engine)", len(tally.errors), group="errors")
    measure("256 clients x 60 s via fake engine: served", f"{tally.served} streams "
            f"({tally.served / elapsed:.0f}/s), {tally.abandoned} abandoned, {len(tally.errors)} errors")  # fmt: skip
    measure("256 clients x 60 s via fake engine: gateway fds cold / warm / after",
            f"{cold[0]} / {before[0]} / {after[0]}")  # fmt: skip
    measure("256 clients x 60 s via fake engine: gateway RSS cold / warm / after",
            f"{cold[1] / 2**20:.1f} / {before[1] / 2**20:.1f} / {after[1] / 2**20:.1f} MiB")  # fmt: skip
    assert not tally.errors, tally.errors[:5]
    assert tally.served > 256
    assert engine_after["in_flight"] == 0
    # every abandoned stream was cancelled at the engine, not generated to its end
    cancelled = engine_after["cancelled"] - engine_before["cancelled"]
    assert cancelled == tally.abandoned, (cancelled, tally.abandoned)
    assert after[0] <= before[0] + FD_GROWTH, (before, after)
    assert after[1] <= before[1] + RSS_GROWTH, (before, after)


@pytest.mark.parametrize("stream", [True, False])
def test_clients_that_disconnect_free_their_upstream_request(gateway_process, fake_engine, stream):
    """64 clients start generations that would take minutes, then go away: the engine sees
    every one of them end within seconds."""
    url = f"{gateway_process.url}/v1/chat/completions"
    body = {**CHAT, "max_tokens": 60_000, "stream": stream}  # 5 minutes each at 5 ms a token
    before = _settle(fake_engine)

    async def leave_early() -> None:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=80)) as c:

            async def one() -> None:
                if stream:
                    async with c.stream("POST", url, json=body, headers=AUTH) as response:
                        assert response.status_code == 200
                        lines = response.aiter_lines()
                        while not (await anext(lines)).startswith("data: "):
                            pass
                else:
                    with pytest.raises(httpx.ReadTimeout):
                        await c.post(url, json=body, headers=AUTH, timeout=1.0)

            await asyncio.gather(*(one() for _ in range(64)))

    asyncio.run(leave_early())
    started = engine_stats(fake_engine)
    assert started["requests"] - before["requests"] == 64
    after = _settle(fake_engine, timeout=20)
    assert after["in_flight"] == 0, after
    assert after["cancelled"] - before["cancelled"] == 64
    assert after["completed"] == before["completed"]
    record("clients gone mid-generation, upstream freed", 64, group="faults survived")


@pytest.mark.slow
def test_16_streaming_clients_against_real_llama_cpp(real_serve):
    url = f"{real_serve.url}/v1/chat/completions"
    body = {"model": "smol", "messages": [{"role": "user", "content": "Say hi"}], "stream": True,
            "max_tokens": 4}  # fmt: skip
    warm = asyncio.run(_drive(url, body, 8, 3, 0, 0))
    assert not warm.errors, warm.errors[:5]
    before = _footprint(real_serve, "smol")
    # llama-cpp-python runs one generation at a time and notices a gone client only between
    # tokens: abandoned requests ask for 128 tokens so a slow notice cannot stall the queue
    tally = asyncio.run(_drive(url, body, 16, 15, 3, 128))
    after = _footprint(real_serve, "smol")
    record("streamed requests served to 16 clients in 15 s (llama.cpp)", tally.served,
           group="requests served")  # fmt: skip
    record("errors under load (16 clients, llama.cpp)", len(tally.errors), group="errors")
    measure("16 clients x 15 s via llama.cpp: served", f"{tally.served} streams, "
            f"{tally.abandoned} abandoned, {len(tally.errors)} errors")  # fmt: skip
    measure("16 clients x 15 s via llama.cpp: gateway fds / RSS before -> after",
            f"{before[0]} -> {after[0]} / {before[1] / 2**20:.1f} -> {after[1] / 2**20:.1f} MiB")  # fmt: skip
    assert not tally.errors, tally.errors[:5]
    assert tally.served >= 8 and tally.abandoned >= 1
    assert after[0] <= before[0] + FD_GROWTH, (before, after)
    assert after[1] <= before[1] + RSS_GROWTH, (before, after)
    ok = httpx.post(url, json={**body, "stream": False}, headers=AUTH, timeout=120)
    assert ok.status_code == 200  # the engine is still healthy after the load
