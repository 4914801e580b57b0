"""The gateway's engine client: keep-alive reuse, body framings, stale connections, aborts."""

from __future__ import annotations

import asyncio

import pytest

from serve.upstream import UpstreamError, UpstreamPool

CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"7\r\ndata: 1\r\n5\r\n\n\ndat\r\n7\r\na: 2\n\n\n\r\n0\r\n\r\n"
)
SIZED = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Engine:
    """A loopback HTTP/1.1 server answering each request with the next canned response."""

    def __init__(self, responses: list[bytes], close_after: int | None = None) -> None:
        self.responses = responses
        self.close_after = close_after  # close every connection after this many responses
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def __aenter__(self) -> Engine:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.responses.pop(0))
                await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()


def run(coroutine):  # noqa: ANN001, ANN201
    return asyncio.run(coroutine)


def test_chunked_body_pieces_and_connection_reuse():
    async def scenario() -> None:
        async with Engine([CHUNKED, SIZED]) as engine:
            pool = UpstreamPool()
            response = await pool.request(engine.url, "/v1/completions", b'{"a":1}')
            assert response.status_code == 200
            pieces = [piece async for piece in response.iter_raw()]
            assert pieces == [b"data: 1", b"\n\ndat", b"a: 2\n\n\n"]
            response.close()
            second = await pool.request(engine.url, "/v1/completions", b"{}", {"x-k": "v"})
            assert await second.read() == b"{}"
            assert engine.connections == 1  # kept alive and reused
            assert engine.requests[0].startswith(b"POST /v1/completions HTTP/1.1\r\n")
            assert engine.requests[0].endswith(b'\r\n\r\n{"a":1}')
            assert b"x-k: v\r\n" in engine.requests[1]
            await pool.aclose()

    run(scenario())


def test_a_connection_the_engine_closed_is_retried_on_a_fresh_one():
    async def scenario() -> None:
        async with Engine([SIZED, SIZED], close_after=1) as engine:
            pool = UpstreamPool()
            assert await (await pool.request(engine.url, "/x", b"{}")).read() == b"{}"
            await asyncio.sleep(0.05)  # the engine has closed the idle connection by now
            assert await (await pool.request(engine.url, "/x", b"{}")).read() == b"{}"
            assert engine.connections == 2

    run(scenario())


def test_an_unfinished_body_closes_the_connection():
    async def scenario() -> None:
        async with Engine([CHUNKED, SIZED]) as engine:
            pool = UpstreamPool()
            response = await pool.request(engine.url, "/x", b"{}")
            async for _ in response.iter_raw():
                break
            response.close()  # a client went away: the engine must see the connection drop
            assert await (await pool.request(engine.url, "/x", b"{}")).read() == b"{}"
            assert engine.connections == 2

    run(scenario())


def test_no_engine_is_an_upstream_error():
    async def scenario() -> None:
        async with Engine([]) as engine:
            url = engine.url
        with pytest.raises(UpstreamError):
            await UpstreamPool().request(url, "/x", b"{}")

    run(scenario())


def test_a_response_cut_mid_body_is_an_upstream_error():
    cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"

    async def scenario() -> None:
        async with Engine([cut], close_after=1) as engine:
            response = await UpstreamPool().request(engine.url, "/x", b"{}")
            with pytest.raises(UpstreamError):
                await response.read()

    run(scenario())
