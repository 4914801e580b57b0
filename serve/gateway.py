"""The OpenAI-compatible HTTP gateway (SPEC §7): routes by model name, applies mode defaults,
splits reasoning, streams through, and answers every failure with OpenAI-shaped JSON."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from serve.embeddings import embeddings_route
from serve.engine_request import EngineRequest, engine_request
from serve.engines.llamacpp import completion_to_chat
from serve.fanout import fan_out
from serve.model_list import get_model, list_models
from serve.model_route import ModelRoute
from serve.page import page_routes
from serve.protocol import (
    MAX_BODY_BYTES,
    GatewayError,
    cors_app,
    engine_error,
    error_response,
    upstream_error,
    upstream_status,
)
from serve.reasoning import split_chat_response
from serve.request_body import read_json_body
from serve.responses import create_response
from serve.streaming import (
    EventStream,
    chat_events,
    engine_pieces,
    rewritten_events,
    wait_disconnect,
)
from serve.tool_calls import parse_response
from serve.upstream import READ_TIMEOUT, UpstreamError, UpstreamPool, UpstreamResponse

logger = logging.getLogger(__name__)
# The hot path: these skip Starlette's routing and middleware (see Gateway.__call__).
_COMPLETION_PATHS = {"/v1/chat/completions": True, "/v1/completions": False}


class Gateway:
    """The HTTP app over a set of ModelRoutes; `app` is the ASGI application.

    Completions go straight from `__call__` to their handler; everything else through Starlette.
    """

    def __init__(
        self,
        routes: list[ModelRoute],
        api_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        cors_origins: Sequence[str] = (),
        report_dir: Path | None = None,
        engine_timeout: float = READ_TIMEOUT,
        key_for_status: bool = False,
    ) -> None:
        """`report_dir`: the eval report (and the run around it) the compare page shows."""
        self.routes = {route.name: route for route in routes}
        self.api_key = api_key or None  # an empty key (TUNESERVE_API_KEY="") means no key
        # /health and /metrics list the served model names: behind the key too when asked
        # (serve_models asks on a non-loopback bind, unless --public-metrics)
        self.key_for_status = key_for_status
        self.max_body_bytes = max_body_bytes
        # One pool of keep-alive engine connections for every upstream call.
        self.upstreams = UpstreamPool(read_timeout=engine_timeout)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneserve_requests",
            "Completion requests",
            ["model", "mode", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tuneserve_request_seconds",
            "Time to response headers",
            ["model"],
            registry=self.registry,
        )
        up = Gauge(
            "tuneserve_engine_up", "1 while the engine answers", ["model"], registry=self.registry
        )
        restarts = Gauge(
            "tuneserve_engine_restarts",
            "Engine restarts after a crash",
            ["model"],
            registry=self.registry,
        )
        for route in routes:
            up.labels(route.name).set_function(lambda route=route: float(route.up))
            restarts.labels(route.name).set_function(
                lambda route=route: float(route.supervisor.restarts if route.supervisor else 0)
            )
        self.router = Starlette(
            routes=[
                HttpRoute("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                HttpRoute("/v1/completions", self.completions, methods=["POST"]),
                HttpRoute("/v1/models", self.models, methods=["GET"]),
                HttpRoute("/v1/models/{model_id:path}", self.model, methods=["GET"]),
                HttpRoute("/v1/responses", self.responses, methods=["POST"]),
                HttpRoute("/v1/embeddings", self.embeddings, methods=["POST"]),
                HttpRoute("/health", self.health, methods=["GET"]),
                HttpRoute("/metrics", self.metrics, methods=["GET"]),
                *page_routes(self._check_key, report_dir),  # the compare page at /
            ],
            lifespan=self._lifespan,
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )
        self.app = self  # the gateway is the ASGI application
        if cors_origins:  # outermost, so preflights and the completions fast path get it too
            self.app = cors_app(self, cors_origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry: completions skip Starlette's router and middleware (they wrap every
        streamed chunk's `send`), all the rest goes through it."""
        chat = _COMPLETION_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if chat is None or scope["method"] != "POST":
            await self.router(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await self._complete(request, chat)
        except Exception as exc:
            logger.exception("gateway error on %s", scope["path"])
            response = await _internal_error(request, exc)
        await response(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.upstreams.aclose()

    # --- plain endpoints -------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        return list_models(self.routes)

    async def model(self, request: Request) -> Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        return get_model(self.routes, request.path_params["model_id"])

    async def responses(self, request: Request) -> Response:
        body = await self.read_request(request)
        if isinstance(body, Response):
            return body
        return await create_response(body, lambda chat: self.complete(request, chat, chat=True))

    async def embeddings(self, request: Request) -> Response:
        body = await self.read_request(request)
        if isinstance(body, Response):
            return body
        try:
            route = embeddings_route(self.routes, body)
        except GatewayError as exc:
            return error_response(exc.status, exc.message, exc.param, exc.code)
        return await self.relay(request, route, "/v1/embeddings", body)

    async def health(self, request: Request) -> Response:
        if self.key_for_status and (denied := self._check_key(request)) is not None:
            return denied
        states = {name: "ready" if route.up else "down" for name, route in self.routes.items()}
        healthy = all(state == "ready" for state in states.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", "models": states},
            status_code=200 if healthy else 503,
        )

    async def metrics(self, request: Request) -> Response:
        if self.key_for_status and (denied := self._check_key(request)) is not None:
            return denied
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # --- completions -----------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def _complete(self, request: Request, chat: bool) -> Response:
        body = await self.read_request(request)
        if isinstance(body, Response):
            return body
        return await self.complete(request, body, chat)

    async def read_request(self, request: Request) -> dict | Response:
        """For endpoints in other modules: the JSON body, or the error to answer (bad key,
        bad JSON, too large)."""
        if (denied := self._check_key(request)) is not None:
            return denied
        try:
            return await read_json_body(request.receive, request.headers, self.max_body_bytes)
        except GatewayError as exc:
            return error_response(exc.status, exc.message, exc.param, exc.code)

    async def complete(self, request: Request, body: dict, chat: bool) -> Response:
        """One completion (the key already checked): a JSON answer, an SSE stream of chunks,
        or an OpenAI-shaped error. Other endpoints (serve/responses.py) call it too."""
        started = time.perf_counter()
        try:
            prepared = engine_request(self.routes, body, chat)
        except GatewayError as exc:
            return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)
        route = prepared.route
        try:
            if not route.up:
                raise GatewayError(
                    503, f"the engine for {route.name!r} is down; it is being restarted"
                )
            stream = bool(prepared.body.get("stream"))
            send = self._stream if stream else self._forward

            async def send_one(prepared: EngineRequest) -> Response:
                if route.pool is not None:
                    return await route.pool.send(send, request, prepared)
                return await send(request, prepared)

            n = prepared.body.get("n") or 1
            if n > 1 and route.engine is not None and route.engine.kind == "llamacpp":
                response = await fan_out(send_one, prepared, n, stream)
            else:
                response = await send_one(prepared)
        except GatewayError as exc:
            response = error_response(
                exc.status, exc.message, exc.param, exc.code, prepared.headers
            )
        self.requests.labels(route.name, prepared.mode, str(response.status_code)).inc()
        self.latency.labels(route.name).observe(time.perf_counter() - started)
        return response

    def _check_key(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.api_key.encode()
        ):
            return None
        return error_response(
            401,
            "invalid or missing API key (send `Authorization: Bearer KEY`)",
            code="invalid_api_key",
        )

    async def relay(self, request: Request, route: ModelRoute, path: str, body: dict) -> Response:
        """POST `body` as it is to `path` on the route's engine; the engine's answer, with
        errors made OpenAI-shaped (the /v1/embeddings endpoint)."""
        payload = json.dumps(body, ensure_ascii=False).encode()
        prepared = EngineRequest(route, path, body, route.server_mode, {}, False, payload=payload)
        try:
            if not route.up:
                raise GatewayError(
                    503, f"the engine for {route.name!r} is down; it is being restarted"
                )
            if route.pool is not None:
                return await route.pool.send(self._forward, request, prepared)
            return await self._forward(request, prepared)
        except GatewayError as exc:
            return error_response(exc.status, exc.message, exc.param, exc.code)

    async def _send_upstream(self, prepared: EngineRequest) -> UpstreamResponse:
        headers = {}
        key = prepared.upstream_key if prepared.upstream else prepared.route.upstream_key
        if key:
            headers["authorization"] = f"Bearer {key}"
        try:
            return await self.upstreams.request(
                prepared.upstream or prepared.route.upstream,
                prepared.path,
                prepared.payload,
                headers,
                reuse=prepared.route.reuses_connections,
            )
        except UpstreamError as exc:
            raise engine_error(prepared.route.name, exc) from None

    async def _fetch(self, prepared: EngineRequest) -> tuple[int, bytes]:
        upstream = await self._send_upstream(prepared)
        try:
            return upstream.status_code, await upstream.read()
        except UpstreamError as exc:
            raise engine_error(prepared.route.name, exc) from None

    async def _forward(self, request: Request, prepared: EngineRequest) -> Response:
        call = asyncio.ensure_future(self._fetch(prepared))
        watch = asyncio.ensure_future(wait_disconnect(request.receive))
        try:
            await asyncio.wait({call, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not call.done():  # the client went away: closing the connection stops the engine
            call.cancel()
            return error_response(499, "client closed the request")
        status, content = call.result()
        if status != 200:
            status = upstream_status(status, content)
            return upstream_error(status, content, prepared.headers)
        if not prepared.chat and prepared.legacy is None:  # the engine's bytes as they are
            return Response(content, media_type="application/json", headers=prepared.headers)
        if prepared.legacy is not None:
            data = prepared.legacy.whole(json.loads(content))
            return JSONResponse(data, headers=prepared.headers)
        data = json.loads(content)
        if prepared.rendered:
            data = completion_to_chat(data)
        data = split_chat_response(data, prepared.in_reasoning, prepared.thinking_closed)
        if prepared.parse_tools:
            data = parse_response(data)
        return JSONResponse(data, headers=prepared.headers)

    async def _stream(self, request: Request, prepared: EngineRequest) -> Response:
        upstream = await self._send_upstream(prepared)
        if upstream.status_code != 200:
            try:
                content = await upstream.read()
            except UpstreamError as exc:
                raise engine_error(prepared.route.name, exc) from None
            status = upstream_status(upstream.status_code, content)
            return upstream_error(status, content, prepared.headers)
        pieces = engine_pieces(upstream)
        if prepared.chat:
            pieces = chat_events(
                pieces,
                rendered=prepared.rendered,
                in_reasoning=prepared.in_reasoning,
                thinking_closed=prepared.thinking_closed,
                single_choice=prepared.body.get("n") in (None, 1),
                tools=prepared.parse_tools,
            )
        elif prepared.legacy is not None:
            pieces = rewritten_events(pieces, prepared.legacy.chunks().rewrite)
        return EventStream(pieces, prepared.headers, close=upstream.close)  # type: ignore[return-value]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer OpenAI-shaped JSON too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error_response(status, f"{request.method} {request.url.path}: {detail}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug still answers OpenAI-shaped JSON (the traceback goes to the gateway's log)."""
    return error_response(500, f"internal error in the gateway ({type(exc).__name__})")
