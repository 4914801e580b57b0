"""Is the eval harness ever the bottleneck? Its request rate vs the engine's own maximum,
side by side in one run: against an instant fake OpenAI engine, and against real llama.cpp.

The engine's maximum is measured with a bare httpx load generator at the same concurrency;
the harness is `evals.runner.run_items` (openai.AsyncOpenAI, retries, cache bookkeeping).
Usage: .venv/bin/python benchmarks/eval_throughput.py [--out benchmarks/results/eval_throughput.md]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.runner import ResponseCache, run_items  # noqa: E402
from evals.suite import Item, Suite  # noqa: E402

REPLY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "fake",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def start_fake_engine() -> tuple[str, object]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        await request.body()
        return JSONResponse(REPLY)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False)
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/v1", server


def suite(n: int) -> Suite:
    items = [
        Item(
            id=f"q{i}",
            messages=[{"role": "user", "content": f"What is {i}+{i}?"}],
            expected=2 * i,
            scorer="number",
        )
        for i in range(n)
    ]
    return Suite(name="bench", items=items)


async def bare_rate(base_url: str, model: str, n: int, concurrency: int, max_tokens: int) -> float:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        timeout=300, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def one(i: int) -> None:
            async with limit:
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"What is {i}+{i}?"}],
                }
                body |= {"max_tokens": max_tokens, "seed": 0}
                response = await client.post(f"{base_url}/chat/completions", json=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)


def harness_rate(base_url: str, model: str, n: int, concurrency: int, max_tokens: int) -> float:
    started = time.perf_counter()
    answers = asyncio.run(
        run_items(
            [suite(n)],
            [model],
            base_url=base_url,
            api_key=None,
            concurrency=concurrency,
            max_tokens=max_tokens,
            seed=0,
            timeout=300,
            cache=ResponseCache(None),
            progress=False,
        )
    )
    assert all(a.error is None for a in answers), [a.error for a in answers if a.error][:3]
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    url, server = start_fake_engine()
    for concurrency in (1, 8, 32):
        bare = asyncio.run(bare_rate(url, "fake", 600, concurrency, 8))
        harness = harness_rate(url, "fake", 600, concurrency, 8)
        rows.append(("instant fake engine", concurrency, bare, harness))
    server.should_exit = True

    from serve.app import serve_models
    from toolkit.builtin import builtin_gguf

    with serve_models([f"smol={builtin_gguf('smollm2-135m')}"], engine="llamacpp") as served:
        for concurrency in (1, 4):
            bare = asyncio.run(bare_rate(served.base_url, "smol", 24, concurrency, 16))
            harness = harness_rate(served.base_url, "smol", 24, concurrency, 16)
            rows.append(("llama.cpp (SmolLM2) via gateway", concurrency, bare, harness))
    lines = [
        "# Eval harness throughput",
        "",
        "`benchmarks/eval_throughput.py`: requests/s of a bare httpx load generator (the engine's",
        "maximum at that concurrency) and of the eval harness, same engine, same requests.",
        "",
        "| engine | concurrency | bare req/s | harness req/s | harness / bare |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {e} | {c} | {b:.1f} | {h:.1f} | **{h / b:.2f}x** |" for e, c, b, h in rows]
    lines += ["", "Goal: the harness is never the bottleneck (>= 0.95x)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
