"""The gateway's HTTP/1.1 client to its engines: pooled keep-alive connections, raw body pieces.

httpx (httpcore + h11 underneath) spends tens of microseconds of Python per streamed chunk, and
on a small CPU box that time is taken from the engine generating the tokens. Engines listen on
loopback and speak plain HTTP/1.1, so this client does only what that needs: one request per
connection at a time, `Content-Length`/chunked/until-close bodies, and connections reused while
their engine keeps them open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0
MAX_IDLE_PER_ENGINE = 256


class UpstreamError(Exception):
    """The engine could not be reached, or it broke the connection mid-response."""


class _Connection:
    __slots__ = ("key", "reader", "writer")

    def __init__(
        self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.key, self.reader, self.writer = key, reader, writer

    @property
    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class UpstreamResponse:
    """Status and headers are read; the body is read by `read()` or `iter_raw()` (once).

    `close()` gives the connection back when the body was read to its end, and otherwise
    closes it: that is how a client who went away stops the engine's generation.
    """

    def __init__(
        self, pool: UpstreamPool, connection: _Connection, status: int, headers: dict[str, str]
    ) -> None:
        self.pool, self._connection = pool, connection
        self.status_code, self.headers = status, headers
        self._complete = False
        self._reusable = headers.get("connection", "").lower() != "close"

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """Body pieces as the engine sent them (chunked framing removed)."""
        reader = self._connection.reader
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif (length := self.headers.get("content-length")) is not None:
                data = await reader.readexactly(int(length))
                if data:
                    yield data
            else:  # delimited by the engine closing the connection
                self._reusable = False
                while data := await reader.read(65536):
                    yield data
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._reusable = False
            raise UpstreamError(
                f"the engine broke off the response ({type(exc).__name__})"
            ) from exc
        self._complete = True

    async def read(self) -> bytes:
        try:
            return b"".join([piece async for piece in self.iter_raw()])
        finally:
            self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None  # type: ignore[assignment]
        if connection is None:
            return
        if self._complete and self._reusable:
            self.pool.release(connection)
        else:
            connection.close()


class UpstreamPool:
    """Keep-alive connections per engine (host, port); `request()` sends one POST."""

    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}

    def _target(self, base_url: str) -> tuple[tuple[str, int], bytes]:
        target = self._targets.get(base_url)
        if target is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamError(f"only http:// engines are supported, not {base_url!r}")
            key = (parts.hostname, parts.port or 80)
            target = self._targets[base_url] = (key, parts.path.rstrip("/").encode())
        return target

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*key, limit=1 << 20), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to the engine ({type(exc).__name__})") from exc
        return _Connection(key, reader, writer)

    def release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if connection.usable and len(idle) < MAX_IDLE_PER_ENGINE:
            idle.append(connection)
        else:
            connection.close()

    async def request(
        self, base_url: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """POST `body` (JSON) to base_url + path; returns once the status and headers arrived."""
        key, prefix = self._target(base_url)
        head = [
            b"POST " + prefix + path.encode() + b" HTTP/1.1\r\n",
            b"host: %s:%d\r\n" % (key[0].encode(), key[1]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
        ]
        head += [f"{name}: {value}\r\n".encode() for name, value in (headers or {}).items()]
        payload = b"".join(head) + b"\r\n" + body
        idle = self._idle.get(key)
        while True:
            reused = bool(idle)
            connection = idle.pop() if idle else await self._connect(key)
            if reused and not connection.usable:
                connection.close()
                continue
            try:
                connection.writer.write(payload)
                status, response_headers = _parse_head(
                    await connection.reader.readuntil(b"\r\n\r\n")
                )
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                connection.close()
                if reused:  # the engine closed an idle connection (e.g. it restarted): retry
                    continue
                raise UpstreamError(
                    f"the engine closed the connection ({type(exc).__name__})"
                ) from exc
            except BaseException:  # cancelled while waiting: the engine must not go on
                connection.close()
                raise
            return UpstreamResponse(self, connection, status, response_headers)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise UpstreamError(
            f"the engine answered something that is not HTTP: {lines[0]!r}"
        ) from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers
