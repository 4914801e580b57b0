"""A local OpenAI-shaped server that records what reached it: which model, which key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Seen:
    path: str
    model: str | None
    authorization: str | None


@dataclass
class FakeOpenAI:
    """Answers /v1/chat/completions with `reply` (a judge model `grader` says PASS) and lists
    `models` on /v1/models, each with `identities[name]` when set (as the gateway does)."""

    models: list[str] = field(default_factory=lambda: ["student", "grader"])
    reply: str = "Paris."
    identities: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def chats(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/chat/completions")]

    def app(self):  # noqa: ANN201
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.seen.append(
                Seen(request.url.path, body.get("model"), request.headers.get("authorization"))
            )
            content = "VERDICT: PASS" if body.get("model") == "grader" else self.reply
            message = {"role": "assistant", "content": content}
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        async def models(request: Request) -> JSONResponse:
            self.seen.append(Seen(request.url.path, None, request.headers.get("authorization")))
            data = []
            for name in self.models:
                entry = {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                if name in self.identities:
                    entry["identity"] = self.identities[name]
                data.append(entry)
            return JSONResponse({"object": "list", "data": data})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
            ]
        )


@pytest.fixture
def fake_openai() -> Iterator:
    """`fake_openai(**fields)` starts a FakeOpenAI on a free loopback port; all stop after."""
    import uvicorn

    running = []

    def start(**fields: object) -> FakeOpenAI:
        fake = FakeOpenAI(**fields)  # type: ignore[arg-type]
        server = uvicorn.Server(
            uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="error")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        fake.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
        running.append((server, thread))
        return fake

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(5)
