"""The gateway's HTTP/1.1 client to its engines: pooled keep-alive connections, raw body pieces.

httpx (httpcore + h11 underneath) spends tens of microseconds of Python per streamed chunk, and
on a small CPU box that time is taken from the engine generating the tokens. Engines listen on
loopback and speak plain HTTP/1.1, so this client does only what that needs: one request per
connection at a time, `Content-Length`/chunked/until-close bodies, and connections reused while
their engine keeps them open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0
# Seconds an engine may send nothing (no response head, no next body piece) before the request
# is given up: a wedged engine must not hold requests forever. Generous, because a request
# that does not stream gets no byte until its whole generation is done.
READ_TIMEOUT = 600.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a whole non-streamed body, or one chunk of a stream
MAX_IDLE_PER_ENGINE = 256
# An idle connection older than this is closed, not reused: engines close idle keep-alive
# connections after ~5 s (llama-server, uvicorn in vLLM), and a request written at that very
# moment is lost without telling whether the engine saw it. Reconnecting on loopback is cheap.
MAX_IDLE_SECONDS = 2.0


class UpstreamError(Exception):
    """The engine could not be reached, or it broke the connection mid-response.

    `sent` is False only when the request never left the gateway (no connection could be
    made): only then may it be tried again elsewhere without running a generation twice.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamTimeout(UpstreamError):
    """The engine sent nothing for `READ_TIMEOUT` seconds (wedged, or far too slow)."""


class UpstreamTooLarge(UpstreamError):
    """The engine's body is larger than the gateway will hold in memory."""


class _Connection:
    __slots__ = ("idle_since", "key", "reader", "writer")

    def __init__(
        self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.key, self.reader, self.writer = key, reader, writer
        self.idle_since = 0.0

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
        self,
        pool: UpstreamPool,
        connection: _Connection,
        status: int,
        headers: dict[str, str],
        reusable: bool = True,
    ) -> None:
        self.pool, self._connection = pool, connection
        self.status_code, self.headers = status, headers
        self._complete = False
        self._reusable = reusable and headers.get("connection", "").lower() != "close"

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """Body pieces as the engine sent them (chunked framing removed).

        Each read waits at most the pool's read timeout (the timer covers the reads only,
        never the consumer's work between pieces); a piece over `max_bytes` is refused.
        """
        reader = self._connection.reader
        timeout, limit = self.pool.read_timeout, self.pool.max_bytes
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    async with asyncio.timeout(timeout):
                        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                        if size == 0:
                            while await reader.readuntil(b"\r\n") != b"\r\n":
                                pass  # trailers
                            break
                        _check_size(size, limit)
                        data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif (length := self.headers.get("content-length")) is not None:
                _check_size(int(length), limit)
                async with asyncio.timeout(timeout):
                    data = await reader.readexactly(int(length))
                if data:
                    yield data
            else:  # delimited by the engine closing the connection
                self._reusable = False
                while True:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(65536)
                    if not data:
                        break
                    yield data
        except TimeoutError:
            self._reusable = False
            raise UpstreamTimeout(f"the engine sent nothing for {timeout:g} s") from None
        except UpstreamError:
            self._reusable = False
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._reusable = False
            raise UpstreamError(
                f"the engine broke off the response ({type(exc).__name__})"
            ) from exc
        self._complete = True

    async def read(self) -> bytes:
        """The whole body, refused past the pool's `max_bytes` (it is held in memory)."""
        pieces, size = [], 0
        try:
            async for piece in self.iter_raw():
                size += len(piece)
                _check_size(size, self.pool.max_bytes)
                pieces.append(piece)
        finally:
            self.close()
        return b"".join(pieces)

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

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}

    def _target(self, base_url: str) -> tuple[tuple[str, int], bytes]:
        target = self._targets.get(base_url)
        if target is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamError(
                    f"only http:// engines are supported, not {base_url!r}", sent=False
                )
            key = (parts.hostname, parts.port or 80)
            target = self._targets[base_url] = (key, parts.path.rstrip("/").encode())
        return target

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*key, limit=1 << 20), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(
                f"cannot connect to the engine ({type(exc).__name__})", sent=False
            ) from exc
        return _Connection(key, reader, writer)

    def release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if connection.usable and len(idle) < MAX_IDLE_PER_ENGINE:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        """The most recently used idle connection that is open and fresh, or None."""
        idle = self._idle.get(key)
        oldest = time.monotonic() - MAX_IDLE_SECONDS
        while idle:
            connection = idle.pop()
            if connection.usable and connection.idle_since >= oldest:
                return connection
            connection.close()
        return None

    async def request(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        reuse: bool = True,
    ) -> UpstreamResponse:
        """POST `body` (JSON) to base_url + path; returns once the status and headers arrived.
        Without `reuse` the request gets a connection of its own, closed after the answer."""
        key, prefix = self._target(base_url)
        head = [
            b"POST " + prefix + path.encode() + b" HTTP/1.1\r\n",
            b"host: %s:%d\r\n" % (key[0].encode(), key[1]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
        ]
        head += [f"{name}: {value}\r\n".encode() for name, value in (headers or {}).items()]
        payload = b"".join(head) + b"\r\n" + body
        # Never sent twice: once the request is written, any failure is the caller's to report
        # (the engine may be generating it). Only a dead idle connection is skipped, before.
        connection = (self._idle_connection(key) if reuse else None) or await self._connect(key)
        try:
            connection.writer.write(payload)
        except (OSError, RuntimeError) as exc:
            # The engine closed the connection before a byte was written (uvloop raises
            # RuntimeError on a closed transport; seen when a killed engine reset a connection
            # it had just accepted): the request never left, so it may go elsewhere.
            connection.close()
            raise UpstreamError(
                f"the engine closed the connection before the request ({type(exc).__name__})",
                sent=False,
            ) from exc
        try:
            async with asyncio.timeout(self.read_timeout):
                head_bytes = await connection.reader.readuntil(b"\r\n\r\n")
            status, response_headers = _parse_head(head_bytes)
        except TimeoutError:
            connection.close()
            raise UpstreamTimeout(
                f"the engine sent no response for {self.read_timeout:g} s"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            connection.close()
            raise UpstreamError(f"the engine closed the connection ({type(exc).__name__})") from exc
        except BaseException:  # cancelled while waiting: the engine must not go on
            connection.close()
            raise
        return UpstreamResponse(self, connection, status, response_headers, reusable=reuse)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise UpstreamTooLarge(f"the engine's response is larger than {limit} bytes")


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
