"""Engine SSE streams on their way to the client: bytes pass through untouched unless a chunk
needs rewriting (a `<think>` block to split, a rendered completion to reshape as chat)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from serve.engines.llamacpp import completion_chunk_to_chat
from serve.reasoning import ChunkSplitter
from serve.tool_calls import ToolChunkParser
from serve.upstream import UpstreamError, UpstreamResponse


class EventStream:
    """An ASGI response sending SSE pieces as they arrive, one `send` each, nothing in between.

    A client that goes away calls `close` at once (not at the next piece): closing the engine
    connection is what makes the engine stop generating for nobody.
    """

    status_code = 200

    def __init__(
        self,
        body_iterator: AsyncIterator[bytes],
        headers: dict[str, str],
        close: Callable[[], None],
    ) -> None:
        self.body_iterator = body_iterator  # replicas.py wraps it to count streams in flight
        self.close = close
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        self.raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watch = asyncio.ensure_future(wait_disconnect(receive))
        watch.add_done_callback(self._client_left)
        try:
            async for piece in self.body_iterator:
                if watch.done():
                    break
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            self.close()
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]

    def _client_left(self, watch: asyncio.Future) -> None:
        if not watch.cancelled() and watch.exception() is None:
            self.close()


async def wait_disconnect(receive: Any) -> None:
    """Returns when the client has gone away (the request body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def engine_pieces(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """The engine's body pieces; an error event if it breaks off mid-stream."""
    try:
        async for piece in upstream.iter_raw():
            yield piece
    except UpstreamError as exc:
        yield stream_error(exc.__cause__ or exc)
    finally:
        upstream.close()  # unless it completed: the engine stops generating


def stream_error(exc: Exception) -> bytes:
    """An error event for a stream the engine broke off (the status line is already sent)."""
    error = {
        "message": f"the engine stopped mid-stream ({type(exc).__name__})",
        "type": "service_unavailable",
        "param": None,
        "code": None,
    }
    return f"data: {json.dumps({'error': error})}\n\n".encode()


async def chat_events(
    pieces: AsyncIterator[bytes],
    *,
    rendered: bool,
    in_reasoning: bool,
    thinking_closed: bool,
    single_choice: bool,
    tools: bool = False,
) -> AsyncIterator[bytes]:
    """Chat chunks with reasoning split out; the engine's own bytes once nothing is left to do.

    Decoding stops as soon as the one choice is past any think block (from then on a rewrite
    would give back the same chunk): only the first chunk of a plain answer, and the thinking
    part of a reasoning one, are decoded and encoded again. Later pieces pass as sent when they
    hold whole events and no `reasoning` field to mirror under its other name (vLLM's parser).
    A rendered completion stream (llama-cpp-python with a thinking template, tool requests on
    llama.cpp) is reshaped chunk by chunk to the end; with `tools`, `<tool_call>` text
    becomes `delta.tool_calls`.
    """
    splitter = ChunkSplitter(in_reasoning, thinking_closed)
    calls = ToolChunkParser() if tools else None
    first = True
    settled = False
    buffer = b""
    async for piece in pieces:
        if settled and not buffer and piece.endswith(_EVENT_ENDS) and b'"reasoning' not in piece:
            yield piece
            continue
        buffer += piece
        if b"\r" in buffer:  # sse-starlette (llama-cpp-python) ends lines with \r\n
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, buffer = buffer.split(b"\n\n")
        out = []
        for event in events:
            payload = _data(event)
            if payload is None:
                continue
            if payload == b"[DONE]":
                out.append(b"data: [DONE]\n\n")
                continue
            try:
                chunk = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError):
                out.append(b"data: " + payload + b"\n\n")
                continue
            if rendered and "choices" in chunk:
                chunk = completion_chunk_to_chat(chunk, first)
                first = False
            chunk = splitter.rewrite(chunk)
            if calls is not None:
                chunk = calls.rewrite(chunk)
            out.append(f"data: {json.dumps(chunk)}\n\n".encode())
        if out:
            yield b"".join(out)
        settled = not rendered and single_choice and splitter.settled()
    if buffer.strip():
        yield buffer  # an unterminated last event, as the engine sent it


async def rewritten_events(
    pieces: AsyncIterator[bytes], rewrite: Callable[[dict], dict]
) -> AsyncIterator[bytes]:
    """Every JSON event of a stream passed through `rewrite`; other events as they are."""
    buffer = b""
    async for piece in pieces:
        buffer += piece.replace(b"\r\n", b"\n")
        *events, buffer = buffer.split(b"\n\n")
        out = []
        for event in events:
            payload = _data(event)
            if payload is None:
                continue
            try:
                chunk = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError):
                out.append(b"data: " + payload + b"\n\n")
                continue
            out.append(f"data: {json.dumps(rewrite(chunk))}\n\n".encode())
        if out:
            yield b"".join(out)
    if buffer.strip():
        yield buffer


_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")


def _data(event: bytes) -> bytes | None:
    """The data of one SSE event (comments and other fields dropped), None when it has none."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
