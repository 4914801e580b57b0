"""A fast OpenAI-shaped engine for load and fuzz tests: it answers in microseconds, streams
`max_tokens` chunks `--delay` seconds apart, and counts what is in flight so a test can prove
that a client who went away freed its upstream request.

Run it as `python -m tests.reliability.fake_engine --port P [--delay S]`; GET /stats gives
`{"requests", "in_flight", "completed", "cancelled"}`. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Stats:
    """What the engine saw; `in_flight` drops only when a generation ends or is abandoned."""

    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.completed = 0
        self.cancelled = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _chunk(chat: bool, index: int, last: bool) -> dict:
    finish = "length" if last else None
    if chat:
        choice = {"index": 0, "delta": {"content": f" t{index}"}, "finish_reason": finish}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": f" t{index}", "finish_reason": finish}
        kind = "text_completion"
    return {"id": "fake-1", "object": kind, "created": 0, "model": "fake", "choices": [choice]}


def _completion(chat: bool, tokens: int) -> dict:
    text = "".join(f" t{index}" for index in range(tokens))
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length",
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": "length"}
    usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
    kind = "chat.completion" if chat else "text_completion"
    return {"id": "fake-1", "object": kind, "created": 0, "model": "fake", "choices": [choice],
            "usage": usage}  # fmt: skip


def build_app(delay: float) -> Starlette:
    stats = Stats()

    async def generate(chat: bool, tokens: int) -> AsyncIterator[bytes]:
        stats.in_flight += 1
        done = False
        try:
            for index in range(tokens):
                if delay:
                    await asyncio.sleep(delay)
                chunk = _chunk(chat, index, index == tokens - 1)
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"
            done = True
        finally:  # also runs when the gateway closes the connection mid-stream
            stats.in_flight -= 1
            if done:
                stats.completed += 1
            else:
                stats.cancelled += 1

    async def complete(request: Request) -> Response:
        stats.requests += 1
        body = json.loads(await request.body())
        chat = request.url.path.endswith("/chat/completions")
        tokens = max(1, min(int(body.get("max_tokens") or 16), 100_000))
        if body.get("stream"):
            return StreamingResponse(generate(chat, tokens), media_type="text/event-stream")
        stats.in_flight += 1
        try:  # a slow non-streamed answer, abandoned as soon as the caller goes away
            deadline = time.monotonic() + delay * tokens
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    stats.cancelled += 1
                    return Response(status_code=499)
                await asyncio.sleep(min(0.01, delay))
            stats.completed += 1
            return JSONResponse(_completion(chat, tokens))
        finally:
            stats.in_flight -= 1

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def show_stats(request: Request) -> Response:
        return JSONResponse(stats.as_dict())

    return Starlette(
        routes=[
            Route("/v1/chat/completions", complete, methods=["POST"]),
            Route("/v1/completions", complete, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/stats", show_stats, methods=["GET"]),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.delay),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
