"""Gateway overhead: the same streamed requests through the gateway and straight to the engine.

Two measurements, side by side in one run:
- real llama.cpp engine (SmolLM2 Q4_1 GGUF), greedy, fixed max_tokens, 1 and 32 concurrent
  streams; the direct requests carry exactly the body the gateway would send, so the engine
  does the same work; runs alternate gateway/direct to cancel drift;
- an instant fake engine (a canned 16-chunk SSE stream) so the gateway's own added latency is
  not hidden by generation noise.

    .venv/bin/python benchmarks/gateway_overhead.py [--out benchmarks/results/gateway_overhead.md]

External mode: an already running gateway and the engine behind it (e.g. vLLM on a GPU), with
output tokens/s, p50/p99 latency and p50 time to first token, both ways, alternating:

    .venv/bin/python benchmarks/gateway_overhead.py --gateway-url http://127.0.0.1:8100 \
        --engine-url http://127.0.0.1:8000 --model qwen3-0.6b --api-key KEY \
        --streams 1,8,32,64 --max-tokens 256 --client-procs 4 --label "vLLM Qwen3-0.6B"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve.launcher import serve_models  # noqa: E402
from serve.model_source import ModelSource
from toolkit.core.modes import SAMPLING  # noqa: E402

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
    return _alternate(
        lambda: asyncio.run(_load(gateway_url, body, concurrency, requests)),
        lambda: asyncio.run(_load(direct_url, direct_body, concurrency, requests)),
        rounds,
        ("chunks_per_s", "p50_ms", "p99_ms"),
    )


def _alternate(gateway, direct, rounds: int, keys: tuple[str, ...]) -> dict:  # noqa: ANN001
    """{key: (gateway mean, direct mean)} over `rounds` of gateway() then direct()."""
    gateway_runs, direct_runs = [], []
    for _ in range(rounds):  # alternate so drift hits both sides alike
        gateway_runs.append(gateway())
        direct_runs.append(direct())

    def mean(runs: list[dict], key: str) -> float:
        return statistics.fmean(run[key] for run in runs)

    return {key: (mean(gateway_runs, key), mean(direct_runs, key)) for key in keys}


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


def _serve_role(role: str, port: int, upstream: str | None, engine: str) -> None:
    """Child-process roles, so client, gateway and engine never share a GIL."""
    import signal
    import threading

    import uvicorn

    if role == "fake-engine":
        uvicorn.run(_fake_engine(), host="127.0.0.1", port=port, log_level="warning")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # "llamacpp": a fresh engine connection per request, as for llama-server; "vllm": pooled
    source = ModelSource(name="smol", url=upstream, engine=engine)
    with serve_models([source], port=port):
        print("ready", flush=True)
        stop.wait()


def _child(
    role: str, upstream: str | None = None, engine: str = "llamacpp"
) -> tuple[subprocess.Popen, str]:
    from serve.engines import free_port

    port = free_port()
    argv = [sys.executable, __file__, "--role", role, "--port", str(port)]
    argv += ["--engine", engine, *(["--upstream", upstream] if upstream else [])]
    process = subprocess.Popen(argv)
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


def _measure(
    upstream: str,
    label: str,
    body: dict,
    direct_body: dict,
    plan,  # noqa: ANN001
    rounds: int,
    engine: str = "llamacpp",
) -> list:
    gateway, gateway_url = _child("gateway", upstream, engine)
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


# External mode: a gateway and engine someone else started (vLLM on a GPU machine, say).
EXTERNAL_KEYS = ("tokens_per_s", "p50_ms", "p99_ms", "ttft_p50_ms", "tokens_per_request")


def _parse_sampling(header: str) -> dict:
    """`temperature=0, top_p=0.8, top_k=20, min_p=0` (`Sampling.header`) -> the fields, typed."""
    fields: dict[str, float | int] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields[key] = int(value) if key == "top_k" else float(value)  # vLLM wants an int top_k
    return fields


def _probe_sampling(gateway_url: str, body: dict, headers: dict) -> dict:
    """The sampling the gateway applies to `body`, from its `x-tuneserve-sampling` header."""
    url = f"{gateway_url}/v1/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=None) as response:
        response.raise_for_status()
        response.read()  # drained, so the engine is idle again when the measurement starts
        sampling = response.headers.get("x-tuneserve-sampling")
    if not sampling:
        raise RuntimeError(f"{gateway_url} sent no x-tuneserve-sampling: not a tuneserve gateway?")
    return _parse_sampling(sampling)


async def _one_stream(
    client: httpx.AsyncClient, url: str, body: dict, headers: dict
) -> tuple[float, float, float, int]:
    """(start, end, time to first text, output tokens) of one streamed completion."""
    started = time.monotonic()
    for attempt in range(2):
        first, chunks, usage = None, 0, None
        try:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    event = json.loads(line[5:])
                    if event.get("usage"):  # the final chunk, with include_usage
                        usage = event["usage"].get("completion_tokens")
                    if any(choice.get("text") for choice in event.get("choices") or ()):
                        chunks += 1
                        first = first or time.monotonic()
            break
        except httpx.RemoteProtocolError:  # the engine closed a kept-alive connection
            if attempt or chunks:
                raise
    ended = time.monotonic()
    # an engine that sends no usage (the fake one): one token per content chunk
    return started, ended, (first or ended) - started, chunks if usage is None else usage


async def _drive(
    url: str,
    body: dict,
    headers: dict,
    workers: int,
    requests: int,
    barrier,  # noqa: ANN001  (a multiprocessing Barrier, or None in the parent)
) -> dict:
    """One client process's share: `workers` streams until `requests` are done."""
    limits = httpx.Limits(max_connections=workers + 4)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        await _one_stream(client, url, body, headers)  # warm the connection and the engine
        if barrier is not None:
            barrier.wait(300)  # blocking is fine: nothing runs on this loop yet
        left = [requests]
        records: list[tuple] = []

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                records.append(await _one_stream(client, url, body, headers))

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return {"started": started, "finished": time.monotonic(), "records": records}


def _client_proc(queue, *args) -> None:  # noqa: ANN001
    try:
        queue.put(asyncio.run(_drive(*args)))
    except BaseException as exc:  # the parent waits on the queue: always answer
        queue.put({"error": repr(exc)})
        raise


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _load_external(
    url: str, body: dict, headers: dict, concurrency: int, requests: int, procs: int
) -> dict:
    """Streams over `procs` client processes (one asyncio loop each), results merged."""
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        runs = [asyncio.run(_drive(url, body, headers, concurrency, requests, None))]
    else:
        # fork: the children inherit the imports, and the parent holds no thread or loop here
        context = multiprocessing.get_context("fork")
        barrier, queue = context.Barrier(procs), context.Queue()
        shares = zip(_split(concurrency, procs), _split(requests, procs), strict=True)
        children = [
            context.Process(
                target=_client_proc, args=(queue, url, body, headers, workers, share, barrier)
            )
            for workers, share in shares
        ]
        for child in children:
            child.start()
        runs = [queue.get() for _ in children]
        for child in children:
            child.join()
        errors = [run["error"] for run in runs if "error" in run]
        if errors:
            raise RuntimeError(f"client process failed: {errors[0]}")
    records = [record for run in runs for record in run["records"]]
    # one wall window for all processes (CLOCK_MONOTONIC is system-wide on Linux)
    elapsed = max(run["finished"] for run in runs) - min(run["started"] for run in runs)
    latencies = sorted(ended - started for started, ended, _, _ in records)
    tokens = sum(count for *_, count in records)
    return {
        "tokens_per_s": tokens / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "ttft_p50_ms": statistics.median(ttft for _, _, ttft, _ in records) * 1000,
        "tokens_per_request": tokens / len(records),
    }


def _external_row(label: str, result: dict) -> str:
    (g_tps, d_tps), (g50, d50), (g99, d99), (g_ttft, d_ttft), (g_n, d_n) = (
        result[k] for k in EXTERNAL_KEYS
    )
    return (
        f"| {label} | {g_tps:.1f} | {d_tps:.1f} | {g_tps / d_tps:.3f}x | {g50:.1f} | {d50:.1f} "
        f"| {g50 - d50:+.2f} | {g99:.1f} | {d99:.1f} | {g_ttft:.1f} | {d_ttft:.1f} "
        f"| {g_ttft - d_ttft:+.2f} | {g_n:.1f} / {d_n:.1f} |"
    )


def _command_line() -> str:
    """This run's command, the API key's value hidden."""
    argv, hide = [], False
    for arg in sys.argv:
        if arg.startswith("--api-key="):
            arg = "--api-key=KEY"
        argv.append("KEY" if hide else arg)
        hide = arg == "--api-key"
    executable = Path(sys.executable)
    if executable.is_relative_to(Path.cwd()):
        executable = executable.relative_to(Path.cwd())
    return shlex.join([str(executable), *argv])


def _run_external(args: argparse.Namespace) -> str:
    body = {
        "model": args.model,
        "prompt": PROMPT,
        "max_tokens": args.max_tokens,
        "stream": True,
        "temperature": 0.0,
        "seed": 0,
        "ignore_eos": True,  # vLLM: every request yields exactly max_tokens tokens
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    engine_headers = (
        {"Authorization": f"Bearer {args.engine_api_key}"} if args.engine_api_key else {}
    )
    applied = _probe_sampling(args.gateway_url, body, headers)
    direct_body = {**body, **applied}  # what the gateway forwards: the engine does the same work
    gateway_url = f"{args.gateway_url}/v1/completions"
    engine_url = f"{args.engine_url}/v1/completions"
    rows = []
    for concurrency in args.streams:
        requests = max(concurrency * args.requests_per_stream, 8)
        load = (concurrency, requests, args.client_procs)
        result = _alternate(
            partial(_load_external, gateway_url, body, headers, *load),
            partial(_load_external, engine_url, direct_body, engine_headers, *load),
            args.rounds,
            EXTERNAL_KEYS,
        )
        rows.append(_external_row(f"{args.label}, {concurrency} stream(s)", result))
        print(rows[-1], flush=True)
    sampling = ", ".join(f"{key}={value:g}" for key, value in applied.items())
    return (
        f"# Gateway overhead: {args.label}, running gateway vs the engine behind it\n\n"
        f"`{_command_line()}`\n\n"
        f"Gateway {args.gateway_url}, engine {args.engine_url}, model `{args.model}`. "
        f"{args.rounds} alternating gateway/direct rounds of streamed /v1/completions, "
        f"max_tokens {args.max_tokens}, ignore_eos, greedy, max(streams x "
        f"{args.requests_per_stream}, 8) requests per round, over {args.client_procs} client "
        f"process(es). The direct requests carry the sampling the gateway applied "
        f"(x-tuneserve-sampling: {sampling}). Tokens from the final chunk's usage, else one a "
        "content chunk; TTFT is the time to the first chunk with text; a stream's latency "
        "ends at [DONE].\n\n"
        "| setup | gateway tok/s | direct tok/s | ratio | gateway p50 ms | direct p50 ms "
        "| added p50 ms | gateway p99 ms | direct p99 ms | gateway TTFT p50 ms "
        "| direct TTFT p50 ms | added TTFT p50 ms | tokens/request gateway / direct |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    external = parser.add_argument_group("external mode: a running gateway and its engine")
    external.add_argument("--gateway-url", help="gateway base URL, no /v1; runs only this mode")
    external.add_argument("--engine-url", help="the engine's base URL, no /v1")
    external.add_argument("--model", default="smol", help="served name, same at both")
    external.add_argument("--api-key", help="the gateway's key")
    external.add_argument(
        "--engine-api-key",
        help="the engine's own key (tuneserve gives each engine a random one, in its environment)",
    )
    external.add_argument("--streams", type=_int_list, default=[1, 8, 32, 64])
    external.add_argument("--requests-per-stream", type=int, default=4)
    external.add_argument("--client-procs", type=int, default=1)
    external.add_argument("--label", default="external")
    parser.add_argument("--role", choices=["fake-engine", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="llamacpp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        _serve_role(args.role, args.port, args.upstream, args.engine)
        return
    if args.gateway_url:
        if not args.engine_url:
            parser.error("--gateway-url needs --engine-url")
        report = _run_external(args)
        print(report)
        if args.out:
            args.out.write_text(report)
        return

    from serve.engines import LlamaCppEngine
    from serve.supervisor import Supervisor
    from toolkit.base_models.builtin import builtin_gguf

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
        rows = []
        for engine_kind, connections in (("vllm", "pooled"), ("llamacpp", "one per request")):
            rows += _measure(
                fake_url,
                f"instant fake engine, connections {connections}",
                body,
                direct_body,
                ((1, 300), (32, 1600)),
                args.rounds,
                engine_kind,
            )
    finally:
        fake.terminate()
        fake.wait(10)

    # called both directly and through a gateway that did not start it: no engine key
    engine = LlamaCppEngine(name="smol", model_path=builtin_gguf("smollm2-135m"), api_key=None)
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
