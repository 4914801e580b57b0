"""The gateway's engine client: keep-alive reuse, body framings, stale connections, aborts."""

from __future__ import annotations

import asyncio

import pytest

import serve.upstream
from serve.upstream import UpstreamError, UpstreamPool, UpstreamTimeout, UpstreamTooLarge

HANG = b"hang"  # read the request, never answer (a wedged engine)
DROP = b"drop"  # read the request, then close without answering (a crash mid-generation)
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
                response = self.responses.pop(0)
                if response == HANG:
                    await asyncio.sleep(3600)
                if response == DROP:
                    break
                writer.write(response)
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


def test_a_wedged_engine_times_out_instead_of_holding_the_request():
    async def scenario() -> None:
        async with Engine([HANG]) as engine:
            pool = UpstreamPool(read_timeout=0.3)
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout):
                await pool.request(engine.url, "/x", b"{}")
            assert asyncio.get_running_loop().time() - started < 2

    run(scenario())


def test_a_stream_that_stops_mid_body_times_out():
    stalled = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"

    async def scenario() -> None:
        async with Engine([stalled]) as engine:  # the head and one chunk, then nothing
            response = await UpstreamPool(read_timeout=0.3).request(engine.url, "/x", b"{}")
            pieces = []
            with pytest.raises(UpstreamTimeout):
                async for piece in response.iter_raw():
                    pieces.append(piece)
            assert pieces == [b"hello"]
            response.close()

    run(scenario())


def test_a_request_the_engine_may_have_seen_is_never_sent_again():
    """The engine read the request on a kept-alive connection, then dropped it: it may have
    been generating, so sending it again (here or on a fresh connection) could run it twice."""

    async def scenario() -> None:
        async with Engine([SIZED, DROP, SIZED]) as engine:
            pool = UpstreamPool()
            assert await (await pool.request(engine.url, "/x", b"{}")).read() == b"{}"
            with pytest.raises(UpstreamError) as caught:
                await pool.request(engine.url, "/x", b'{"n": 2}')
            assert caught.value.sent is True
            assert [r.endswith(b'{"n": 2}') for r in engine.requests] == [False, True]

    run(scenario())


def test_an_idle_connection_past_its_age_is_not_reused(monkeypatch):
    """Engines close idle keep-alive connections after ~5 s; a request written just as that
    happens is lost, so an old idle connection is closed rather than reused."""
    monkeypatch.setattr(serve.upstream, "MAX_IDLE_SECONDS", 0.05)

    async def scenario() -> None:
        async with Engine([SIZED, SIZED, SIZED]) as engine:
            pool = UpstreamPool()
            for _ in range(2):
                assert await (await pool.request(engine.url, "/x", b"{}")).read() == b"{}"
            assert engine.connections == 1  # fresh: reused
            await asyncio.sleep(0.1)
            assert await (await pool.request(engine.url, "/x", b"{}")).read() == b"{}"
            assert engine.connections == 2

    run(scenario())


def test_only_a_connection_never_made_is_marked_unsent():
    async def scenario() -> None:
        async with Engine([]) as engine:
            url = engine.url
        with pytest.raises(UpstreamError) as caught:
            await UpstreamPool().request(url, "/x", b"{}")
        assert caught.value.sent is False

    run(scenario())


def test_a_connection_reset_before_the_request_was_written_is_marked_unsent(monkeypatch):
    """A killed engine resets a connection it had just accepted. On uvloop (the gateway's
    loop) writing to that transport raises RuntimeError: nothing left the gateway, so it is an
    unsent UpstreamError (another replica may take it), not an internal error."""
    import uvloop

    async def scenario() -> None:
        async with Engine([SIZED]) as engine:
            pool = UpstreamPool()
            connect = pool._connect

            async def reset_on_arrival(key):  # noqa: ANN001, ANN202
                connection = await connect(key)
                connection.writer.transport.abort()  # as the engine's reset leaves it
                await asyncio.sleep(0.01)
                return connection

            monkeypatch.setattr(pool, "_connect", reset_on_arrival)
            with pytest.raises(UpstreamError) as caught:
                await pool.request(engine.url, "/x", b"{}", reuse=False)
            assert caught.value.sent is False, caught.value
            assert engine.requests == []

    uvloop.run(scenario())


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2000000\r\n\r\n" + b"x" * 2_000_000,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n" % 2_000_000
        + b"x" * 2_000_000
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n" % 100_000 + b"x" * 100_000 + b"\r\n" for _ in range(20))
        + b"0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * 2_000_000,
    ],
    ids=["content-length", "one-huge-chunk", "many-chunks", "until-close"],
)
def test_a_body_past_the_limit_is_refused(response):
    async def scenario() -> None:
        async with Engine([response], close_after=1) as engine:
            pool = UpstreamPool(max_bytes=1_000_000)
            upstream = await pool.request(engine.url, "/x", b"{}")
            with pytest.raises(UpstreamTooLarge):
                await upstream.read()

    run(scenario())


@pytest.mark.slow  # a gateway and an engine started, then a timeout waited out: ~6 s
def test_the_gateway_answers_504_when_its_engine_is_wedged(tmp_path):
    """Through a real gateway and the openai client: a clear 504, not a request held forever."""
    import openai
    from starlette.applications import Starlette
    from starlette.routing import Route

    from serve.launcher import serve_models
    from serve.model_source import ModelSource
    from tests.serve.conftest import _run_in_thread

    async def wedged(request):  # noqa: ANN001, ANN202
        await asyncio.sleep(3600)

    url, server, thread = _run_in_thread(
        Starlette(routes=[Route("/v1/chat/completions", wedged, methods=["POST"])])
    )
    try:
        with serve_models(
            [ModelSource(name="stuck", url=url)], log_dir=tmp_path, engine_timeout=0.5
        ) as served:
            client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(
                    model="stuck", messages=[{"role": "user", "content": "hi"}], timeout=30
                )
    finally:
        server.should_exit = True
        thread.join(5)
    assert caught.value.status_code == 504
    error = caught.value.body
    assert error["code"] == "engine_timeout" and "--engine-timeout" in error["message"]


@pytest.mark.slow  # a real llama-server started, then 16 streamed completions: ~10 s
def test_a_llama_server_started_elsewhere_answers_every_request(tmp_path, base_gguf):
    """llama-server breaks off kept-alive connections (seen: one streamed request after another
    on one connection, every few requests), so the gateway opens a fresh connection per request
    to a llama.cpp engine named by URL, as it does to one it started (before: 503 `unreachable`
    in benchmarks/gateway_overhead.py)."""
    import httpx

    from serve.engines import LlamaCppEngine
    from serve.launcher import serve_models
    from serve.model_source import ModelSource
    from serve.supervisor import Supervisor

    engine = LlamaCppEngine("smol", base_gguf, api_key=None)  # not ours: no engine key
    supervisor = Supervisor(engine, tmp_path / "engine.log", restart=False)
    supervisor.start()
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 16, "stream": True}
    source = ModelSource(name="smol", url=engine.base_url, engine="llamacpp")
    answers = []
    try:
        with serve_models([source], log_dir=tmp_path) as served, httpx.Client(timeout=60) as client:
            for _ in range(16):
                url = f"{served.base_url}/completions"
                with client.stream("POST", url, json=body) as response:
                    lines = list(response.iter_lines())
                answers.append(lines[-2] if response.status_code == 200 else lines)
    finally:
        supervisor.stop()
    assert answers == ["data: [DONE]"] * 16
