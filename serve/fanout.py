"""`n` > 1 on llama.cpp: one engine request per choice, merged into one answer.

llama-server answers `n` with every choice but the first one's usage (its choices are merged
after the fact), and llama-cpp-python's server ignores `n`. The gateway asks for each choice
on its own (a given seed becomes seed + i, so choices differ) and merges: choices numbered in
order, `completion_tokens` summed, the prompt counted once. Streams are interleaved as their
chunks arrive, each choice keeping its index; one usage chunk and one `[DONE]` end them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from serve.streaming import EventStream

_DONE = object()


def merged_usage(usages: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    found = [usage for usage in usages if isinstance(usage, dict)]
    if not found:
        return None
    prompt = found[0].get("prompt_tokens", 0)
    completion = sum(usage.get("completion_tokens", 0) for usage in found)
    return {**found[0], "completion_tokens": completion, "total_tokens": prompt + completion}


def merge_answers(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole answers of one choice each -> one answer with every choice."""
    choices = [
        {**choice, "index": index}
        for index, answer in enumerate(answers)
        for choice in answer.get("choices", [])[:1]
    ]
    merged = {**answers[0], "choices": choices}
    usage = merged_usage([answer.get("usage") for answer in answers])
    if usage is not None:
        merged["usage"] = usage
    return merged


def one_choice(prepared: Any, index: int, seed: int) -> Any:
    """Choice `index` of a prepared `n` > 1 request, asked on its own with seed + index (an
    unseeded request gets a random seed: an engine may otherwise sample every choice alike)."""
    body = {**prepared.body, "n": 1}
    body["seed"] = (body["seed"] if isinstance(body.get("seed"), int) else seed) + index
    payload = json.dumps(body, ensure_ascii=False).encode()
    return dataclasses.replace(prepared, body=body, payload=payload)


async def fan_out(
    send: Callable[[Any], Awaitable[Response]], prepared: Any, n: int, stream: bool
) -> Response:
    """Send each choice of `prepared` on its own and merge the answers (the first error wins)."""
    seed = random.randrange(2**31)
    copies = [one_choice(prepared, index, seed) for index in range(n)]
    headers = prepared.headers
    answers = await asyncio.gather(*(send(copy) for copy in copies), return_exceptions=True)
    failed = next((a for a in answers if isinstance(a, BaseException)), None)
    failed = failed or next((a for a in answers if a.status_code != 200), None)  # type: ignore[union-attr]
    if failed is not None:
        for answer in answers:
            if isinstance(answer, EventStream):
                answer.close()
        if isinstance(failed, BaseException):
            raise failed
        return failed
    if not stream:
        merged = merge_answers([json.loads(answer.body) for answer in answers])  # type: ignore[union-attr]
        return JSONResponse(merged, headers=headers)
    streams: list[EventStream] = answers  # type: ignore[assignment]

    def close() -> None:
        for one in streams:
            one.close()

    return EventStream(_interleave(streams), headers, close=close)  # type: ignore[return-value]


async def _events(stream: EventStream) -> AsyncIterator[bytes]:
    """The data of each SSE event of one stream."""
    buffer = b""
    async for piece in stream.body_iterator:
        buffer += piece.replace(b"\r\n", b"\n")
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if lines:
                yield b"\n".join(lines)


async def _interleave(streams: list[EventStream]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: EventStream) -> None:
        try:
            async for data in _events(stream):
                await queue.put((index, data))
        finally:
            await queue.put((index, _DONE))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    usages: list[dict[str, Any] | None] = [None] * len(streams)
    template: dict[str, Any] = {}  # id, model, created of the final usage chunk
    running = len(streams)
    try:
        while running:
            index, data = await queue.get()
            if data is _DONE:
                running -= 1
                continue
            if data == b"[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                yield b"data: " + data + b"\n\n"
                continue
            if isinstance(chunk.get("usage"), dict):
                usages[index] = chunk["usage"]
            choices = chunk.get("choices")
            if not choices:  # one choice's usage-only chunk: one for all comes at the end
                if "error" in chunk:
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                continue
            chunk["choices"] = [{**c, "index": index} for c in choices if isinstance(c, dict)]
            chunk.pop("usage", None)
            template = template or chunk
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        usage = merged_usage(usages)
        if usage is not None:
            yield f"data: {json.dumps({**template, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.body_iterator.aclose()  # type: ignore[attr-defined]
