"""Gateway overhead: the same streamed requests through the gateway and straight to the engine.

Two measurements, side by side in one run:
- real llama.cpp engine (SmolLM2 Q4_1 GGUF), greedy, fixed max_tokens, 1 and 32 concurrent
  streams; the direct requests carry exactly the body the gateway would send, so the engine
  does the same work; runs alternate gateway/direct to cancel drift;
- an instant fake engine (a canned 16-chunk SSE stream) so the gateway's own added latency is
  not hidden by generation noise.

    .venv/bin/python benchmarks/gateway_overhead.py [--out benchmarks/results/gateway_overhead.md]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve.app import ModelSource, serve_models  # noqa: E402
from serve.modes import SAMPLING  # noqa: E402

PROMPT = "<|im_start|>user\nWrite a short story about a cat.<|im_end|>\n<|im_start|>assistant\n"


async def _one(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, int]:
    started = time.perf_counter()
    for attempt in range(2):
        chunks = 0
        try:
            async with client.stream("POST", url, json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data:") and "[DONE]" not in line:
                        chunks += 1
            break
        except httpx.RemoteProtocolError:  # llama-server closed a kept-alive connection
            if attempt or chunks:
                raise
    return time.perf_counter() - started, chunks


async def _load(url: str, body: dict, concurrency: int, requests: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        await _one(client, url, body)  # warm the connection and the engine
        queue = list(range(requests))
        latencies: list[float] = []
        chunks = 0

        async def worker() -> None:
            nonlocal chunks
            while queue:
                queue.pop()
                latency, count = await _one(client, url, body)
                latencies.append(latency)
                chunks += count

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "chunks_per_s": chunks / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def _compare(
    gateway_url: str,
    direct_url: str,
    body: dict,
    direct_body: dict,
    concurrency: int,
    requests: int,
    rounds: int,
) -> dict:
    gateway_runs, direct_runs = [], []
    for _ in range(rounds):  # alternate so drift hits both sides alike
        gateway_runs.append(asyncio.run(_load(gateway_url, body, concurrency, requests)))
        direct_runs.append(asyncio.run(_load(direct_url, direct_body, concurrency, requests)))

    def mean(runs: list[dict], key: str) -> float:
        return statistics.fmean(run[key] for run in runs)

    return {
        key: (mean(gateway_runs, key), mean(direct_runs, key))
        for key in ("chunks_per_s", "p50_ms", "p99_ms")
    }


def _fake_engine():  # noqa: ANN202
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    chunk = (
        'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"fake",'
        '"choices":[{"index":0,"text":" cat","finish_reason":null}]}\n\n'
    )

    async def completions(request):  # noqa: ANN001, ANN202
        await request.body()

        async def events():  # noqa: ANN202
            for _ in range(16):
                yield chunk
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def _row(label: str, result: dict) -> str:
    (g_tps, d_tps), (g50, d50), (g99, d99) = (
        result[k] for k in ("chunks_per_s", "p50_ms", "p99_ms")
    )
    return (
        f"| {label} | {g_tps:.1f} | {d_tps:.1f} | {g_tps / d_tps:.3f}x | {g50:.2f} | {d50:.2f} "
        f"| {g50 - d50:+.2f} | {g99:.2f} | {d99:.2f} |"
    )


def _serve_role(role: str, port: int, upstream: str | None) -> None:
    """Child-process roles, so client, gateway and engine never share a GIL."""
    import signal
    import threading

    import uvicorn

    if role == "fake-engine":
        uvicorn.run(_fake_engine(), host="127.0.0.1", port=port, log_level="warning")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    source = ModelSource(name="smol", url=upstream, engine="llamacpp")
    with serve_models([source], port=port):
        print("ready", flush=True)
        stop.wait()


def _child(role: str, upstream: str | None = None) -> tuple[subprocess.Popen, str]:
    from serve.engines import free_port

    port = free_port()
    argv = [sys.executable, __file__, "--role", role, "--port", str(port)]
    process = subprocess.Popen([*argv, *(["--upstream", upstream] if upstream else [])])
    url = f"http://127.0.0.1:{port}"
    probe = "/health" if role == "gateway" else "/"
    while True:
        try:
            httpx.get(url + probe, timeout=1)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError(f"{role} did not start") from None
            time.sleep(0.1)


def _measure(upstream: str, label: str, body: dict, direct_body: dict, plan, rounds: int) -> list:
    gateway, gateway_url = _child("gateway", upstream)
    rows = []
    try:
        for concurrency, requests in plan:
            result = _compare(
                f"{gateway_url}/v1/completions",
                f"{upstream}/v1/completions",
                body,
                direct_body,
                concurrency,
                requests,
                rounds,
            )
            rows.append(_row(f"{label}, {concurrency} stream(s)", result))
            print(rows[-1], flush=True)
    finally:
        gateway.terminate()
        gateway.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--role", choices=["fake-engine", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        _serve_role(args.role, args.port, args.upstream)
        return

    from serve.engines import LlamaCppEngine
    from serve.supervisor import Supervisor
    from toolkit.builtin import builtin_gguf

    body = {
        "model": "smol",
        "prompt": PROMPT,
        "max_tokens": args.max_tokens,
        "stream": True,
        "temperature": 0.0,
        "seed": 0,
    }
    # what the gateway forwards for `body` (chat mode fills only the unset fields)
    direct_body = {**SAMPLING["chat"].as_dict(), **body, "repeat_penalty": 1.0}
    header = (
        "| setup | gateway chunks/s | direct chunks/s | ratio | gateway p50 ms | direct p50 ms "
        "| added p50 ms | gateway p99 ms | direct p99 ms |\n|---|---|---|---|---|---|---|---|---|"
    )

    fake, fake_url = _child("fake-engine")
    try:
        rows = _measure(
            fake_url, "instant fake engine", body, direct_body, ((1, 300), (32, 1600)), args.rounds
        )
    finally:
        fake.terminate()
        fake.wait(10)

    engine = LlamaCppEngine(name="smol", model_path=builtin_gguf("smollm2-135m"))
    kind = "llama-server" if engine.native_binary else "llama-cpp-python server"
    supervisor = Supervisor(engine, Path(tempfile.mkdtemp()) / "engine.log", restart=False)
    supervisor.start()
    try:
        rows += _measure(
            engine.base_url,
            f"{kind} SmolLM2-135M Q4_1",
            body,
            direct_body,
            ((1, 12), (32, 64)),
            args.rounds,
        )
    finally:
        supervisor.stop()

    report = (
        "# Gateway overhead\n\n"
        f"`.venv/bin/python benchmarks/gateway_overhead.py` ({args.rounds} alternating rounds, "
        f"streamed /v1/completions, max_tokens {args.max_tokens}, greedy; client, gateway and "
        "engine in separate processes). Goal: ratio >= 0.98x, added p50 <= 1 ms.\n\n"
        + header
        + "\n"
        + "\n".join(rows)
        + "\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
