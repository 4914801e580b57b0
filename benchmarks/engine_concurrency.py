"""llama.cpp engine concurrency: aggregate generated tokens/s at 8 concurrent streams over 1.

Measures the engine `tuneserve serve` would start for the shipped SmolLM2 GGUF (native
`llama-server` when on PATH or $TUNESERVE_LLAMA_SERVER, else llama-cpp-python's server, which
serializes requests and so cannot beat 1.0x). Goal: >= 1.3x on 2 cores.

    .venv/bin/python benchmarks/engine_concurrency.py [--out benchmarks/results/engine_concurrency.md]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve.engines import LlamaCppEngine  # noqa: E402
from serve.supervisor import Supervisor  # noqa: E402

PROMPT = "<|im_start|>user\nWrite a short story about a cat.<|im_end|>\n<|im_start|>assistant\n"


async def _stream(client: httpx.AsyncClient, url: str, body: dict) -> int:
    tokens = 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:") and "[DONE]" not in line and '"text":""' not in line:
                tokens += 1
    return tokens


async def _aggregate(url: str, body: dict, streams: int, per_stream: int) -> float:
    async with httpx.AsyncClient(timeout=None) as client:
        await _stream(client, url, {**body, "max_tokens": 4})  # warm-up

        async def worker() -> int:
            return sum([await _stream(client, url, body) for _ in range(per_stream)])

        started = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(streams)))
        return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()

    from toolkit.base_models.builtin import builtin_gguf

    # measured directly, no gateway in front: no engine key (loopback, for the run only)
    engine = LlamaCppEngine(
        name="smol", model_path=builtin_gguf("smollm2-135m"), parallel=8, api_key=None
    )
    kind = (
        f"native llama-server ({engine.native_binary})"
        if engine.native_binary
        else ("llama-cpp-python server (--interrupt_requests False)")
    )
    supervisor = Supervisor(engine, Path(tempfile.mkdtemp()) / "engine.log", restart=False)
    supervisor.start()
    body = {
        "model": "smol",
        "prompt": PROMPT,
        "max_tokens": args.max_tokens,
        "stream": True,
        "temperature": 0.0,
        "seed": 0,
        "repeat_penalty": 1.0,
    }
    url = f"{engine.base_url}/v1/completions"
    try:
        single = asyncio.run(_aggregate(url, body, 1, 4))
        many = asyncio.run(_aggregate(url, body, args.streams, 2))
    finally:
        supervisor.stop()
    ratio = many / single
    report = (
        "# llama.cpp engine concurrency\n\n"
        f"`.venv/bin/python benchmarks/engine_concurrency.py`: engine = {kind}; SmolLM2-135M "
        f"Q4_1, streamed /v1/completions, max_tokens {args.max_tokens}, greedy. Goal >= 1.3x.\n\n"
        "| streams | aggregate tokens/s |\n|---|---|\n"
        f"| 1 | {single:.1f} |\n| {args.streams} | {many:.1f} |\n\n"
        f"ratio {args.streams} streams / 1 stream: **{ratio:.2f}x**\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
