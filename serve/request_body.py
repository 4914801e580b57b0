"""A client's JSON body read within a size bound, and a 413 the client can actually read.

A server that answers before reading the body and then closes the connection with unread
bytes makes the kernel send a reset: a client still uploading (the openai SDKs, HTTP/1.0
proxies that send `Connection: close`) sees "connection reset" instead of the 413, and the SDKs
retry it. So an oversized body is read and dropped first, up to a bound, and only then
answered; past the bound the answer says `connection: close`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from serve.protocol import GatewayError

DRAIN_BYTES = 256 * 1024 * 1024  # most an oversized body is read (and dropped) to answer it
DRAIN_SECONDS = 60.0


async def read_json_body(receive: Any, headers: Any, max_bytes: int) -> dict:
    """The request's JSON object, or GatewayError (400 bad JSON, 413 over `max_bytes`)."""
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise await _too_large(receive, max_bytes)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(499, "client closed the request")
        chunk, more = message.get("body", b""), message.get("more_body", False)
        size += len(chunk)
        if size > max_bytes:
            raise await _too_large(receive, max_bytes, more)
        chunks.append(chunk)
    try:
        # strict UTF-8: json.loads(bytes) would let encoded surrogates through to the engine
        body = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of 4300+ digits
        raise GatewayError(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:  # the decoder recurses once per nesting level
        raise GatewayError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "request body must be a JSON object")
    return body


async def _too_large(receive: Any, max_bytes: int, more: bool = True) -> GatewayError:
    error = GatewayError(
        413, f"request body is larger than {max_bytes} bytes", code="request_too_large"
    )
    if more and not await drain(receive):
        error.headers = {"connection": "close"}  # gave up reading: say so before closing
    return error


async def drain(receive: Any, limit: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS) -> bool:
    """Read and drop the rest of the body; False when it went past `limit` bytes or
    `seconds` (the connection is then closed after the answer)."""
    drained = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    return True
                drained += len(message.get("body", b""))
                if drained > limit:
                    return False
    except TimeoutError:
        return False
