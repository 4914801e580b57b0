"""Is the eval harness ever the bottleneck? Its request rate as a ratio to the engine's own
maximum, side by side: against a fast fake OpenAI engine in its own process, and against real
llama.cpp (SmolLM2) behind the gateway.

The engine's maximum at a concurrency is what a bare load generator gets from it: a tight loop
of `AsyncClient.post` with that many workers and the same request bodies, with httpx and with
httpx2 (the fork openai >= 3 sends through), whichever is faster. The harness is
`evals.runner.run_items` (one openai.AsyncOpenAI, retries, cache keys and cache writes to
disk). Runs alternate (bare, harness, bare, ...) and each figure is the median, because the
machine is shared; client CPU time per request is printed too, as it is steadier. Usage:
  .venv/bin/python benchmarks/eval_throughput.py [--out benchmarks/results/eval_throughput.md]
Against an engine or gateway that is already running (e.g. vLLM behind the gateway on a GPU):
  .venv/bin/python benchmarks/eval_throughput.py --url http://127.0.0.1:8100/v1 \
      --model qwen3-0.6b --api-key KEY --concurrency 1,8,32,64 --label "vLLM Qwen3-0.6B"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.runner import ResponseCache, request_for, run_items  # noqa: E402
from evals.suite import Item, Suite  # noqa: E402


def suite(n: int, offset: int) -> Suite:
    """`offset` makes every run's prompts new, so no run is answered from a cache."""
    items = [
        Item(
            id=f"q{i}",
            messages=[{"role": "user", "content": f"What is {i}+{i}? Reply with the number."}],
            expected=2 * i,
            scorer="number",
        )
        for i in range(offset, offset + n)
    ]
    return Suite(name="bench", items=items)


def start_fake_engine(delay_ms: float) -> tuple[str, subprocess.Popen]:
    engine = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "fake_engine.py"), "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(engine.stdout.readline())
    return f"http://127.0.0.1:{port}/v1", engine


def http_libraries() -> list:
    libraries = [httpx]
    try:
        import httpx2

        libraries.append(httpx2)
    except ImportError:
        pass
    return libraries


async def bare_rate(
    base_url: str,
    bodies: list[dict],
    concurrency: int,
    library=httpx,  # noqa: ANN001
    api_key: str | None = None,
) -> float:
    """The engine's maximum: as many tight client workers as the concurrency, no extra work."""
    # Timed from the client's creation, as the harness is (its client is made per run too).
    started = time.perf_counter()
    limits = library.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # the same key as the harness, so an authenticating gateway does the same work for both
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    client = library.AsyncClient(
        base_url=base_url, timeout=300, limits=limits, verify=False, headers=headers
    )
    async with client:  # plain http: no CA bundle to load, as in the harness
        pending = iter(bodies)

        async def worker() -> None:
            for body in pending:
                response = await client.post("/chat/completions", json=body)
                response.raise_for_status()
                response.json()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


def harness_rate(
    base_url: str,
    model: str,
    items: Suite,
    concurrency: int,
    tokens: int,
    api_key: str | None = None,
) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        answers = asyncio.run(
            run_items(
                [items],
                [model],
                base_url=base_url,
                api_key=api_key,
                concurrency=concurrency,
                max_tokens=tokens,
                seed=0,
                timeout=300,
                cache=ResponseCache(Path(folder) / "responses.jsonl"),
                progress=False,
            )
        )
        rate = len(answers) / (time.perf_counter() - started)
    errors = [a.error for a in answers if a.error]
    assert not errors, errors[:3]
    return rate


def timed(count: int, run, *args) -> tuple[float, float]:
    """(requests/s, client CPU microseconds per request) of `run(*args) -> requests/s`."""
    cpu = time.process_time()
    rate = run(*args)
    return rate, (time.process_time() - cpu) / count * 1e6


def bare_run(
    url: str,
    bodies: list[dict],
    concurrency: int,
    library,  # noqa: ANN001
    api_key: str | None = None,
) -> float:
    return asyncio.run(bare_rate(url, bodies, concurrency, library, api_key))


def measure(
    label: str,
    url: str,
    model: str,
    concurrency: int,
    n: int,
    tokens: int,
    repeats: int,
    api_key: str | None = None,
) -> tuple:
    libraries = http_libraries()
    bare: dict[str, list] = {lib.__name__: [] for lib in libraries}
    harness: list = []
    offset = 0
    for _ in range(repeats):
        for library in libraries:
            bodies = [request_for(i, model, tokens, 0) for i in suite(n, offset).items]
            offset += n
            bare[library.__name__].append(
                timed(n, bare_run, url, bodies, concurrency, library, api_key)
            )
        prompts = suite(n, offset)
        offset += n
        harness.append(timed(n, harness_rate, url, model, prompts, concurrency, tokens, api_key))
    medians = {
        name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in [*bare.items(), ("harness", harness)]
    }
    best = max(bare, key=lambda name: medians[name][0])
    row = (label, concurrency, best, *medians[best], *medians["harness"])
    shown = "  ".join(f"{k} {r:7.1f}/s {c:5.0f}us" for k, (r, c) in medians.items())
    print(f"{label:<32} c={concurrency:<3} {shown}  -> {row[5] / row[3]:.2f}x", flush=True)
    return row


def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def measure_url(args: argparse.Namespace) -> list:
    """Rows against a running engine or gateway; the bare loop and the harness share the key."""
    label = args.label or args.url
    key, tokens = args.api_key, args.max_tokens
    # warm-up: imports, first connections, the engine's first requests
    measure(label, args.url, args.model, 4, min(args.requests, 50), tokens, 1, key)
    return [
        measure(label, args.url, args.model, c, args.requests, tokens, args.repeats, key)
        for c in args.concurrency
    ]


def measure_builtin(args: argparse.Namespace) -> list:
    """Rows against the fake engine and, unless --skip-real, llama.cpp behind the gateway."""
    rows = []
    for delay_ms, label in ((0.0, "fake engine, instant"), (20.0, "fake engine, 20 ms a request")):
        url, engine = start_fake_engine(delay_ms)
        try:
            measure(label, url, "fake", 4, 50, 8, 1)  # warm-up: imports, first connections
            for concurrency in (1, 8, 32):
                n = 600 if delay_ms == 0 else max(300, concurrency * 30)
                rows.append(measure(label, url, "fake", concurrency, n, 8, args.repeats))
        finally:
            engine.terminate()
            engine.wait()
    if not args.skip_real:
        from serve.launcher import serve_models
        from toolkit.base_models.builtin import builtin_gguf

        label = "llama.cpp (SmolLM2) via gateway"
        with serve_models([f"smol={builtin_gguf('smollm2-135m')}"], engine="llamacpp") as served:
            for concurrency in (1, 4):
                rows.append(measure(label, served.base_url, "smol", concurrency, 16, 16, 2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-real", action="store_true")
    running = parser.add_argument_group("an engine or gateway that is already running")
    running.add_argument("--url", help="OpenAI base URL ending in /v1; measures only this")
    running.add_argument("--model", default="fake")
    running.add_argument("--api-key", default=None)
    running.add_argument("--concurrency", type=int_list, default=[1, 8, 32, 64])
    running.add_argument("--requests", type=int, default=200, help="per measurement")
    running.add_argument("--max-tokens", type=int, default=16)
    running.add_argument("--label", default=None, help="the engine, for the rows")
    args = parser.parse_args()
    import openai  # noqa: F401  (imported before timing: its import is not per request)

    if args.url:
        rows = measure_url(args)
        setup = [
            "measured by a bare `httpx` loop with the same request bodies. Engine: "
            f"{args.label or args.url},",
            f"measured through {args.url} (model `{args.model}`, max_tokens {args.max_tokens}, "
            f"{args.requests} requests a run). Medians of alternating runs.",
        ]
    else:
        rows = measure_builtin(args)
        setup = [
            "measured by a bare `httpx` loop with the same request bodies. The fake engine",
            "(`benchmarks/fake_engine.py`) runs in its own process. Medians of alternating runs.",
        ]
    load = os.getloadavg()[0]
    lines = [
        "# Eval harness throughput",
        "",
        "`benchmarks/eval_throughput.py`: requests/s of the eval harness (`evals.runner`, one",
        "`openai.AsyncOpenAI`, cache writes on) vs the engine's maximum at the same concurrency,",
        *setup,
        f"Machine: {os.cpu_count()} CPU cores shared with other work (1-min load {load:.1f}).",
        "",
        "| engine | concurrency | engine max req/s (bare client) | harness req/s | harness / max "
        "| client CPU us/request: bare / harness |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {e} | {c} | {b:.1f} ({lib}) | {h:.1f} | **{h / b:.2f}x** | {bc:.0f} / {hc:.0f} |"
        for e, c, lib, b, bc, h, hc in rows
    ]
    worst = min(row[5] / row[3] for row in rows)
    lines += [
        "",
        f"Lowest ratio: {worst:.2f}x. Goal: the harness is never the bottleneck (>= 0.95x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
