"""The gateway over vLLM's response shapes, replayed by a small fake vLLM HTTP server.

Two sets: one written from vLLM's protocol models (ChatCompletionResponse,
ChatCompletionStreamResponse, DeltaMessage with `reasoning` from --reasoning-parser qwen3,
UsageInfo), and one captured from real vLLM 0.26.0 on the GPU machine (vllm026_*: all of the
answer is reasoning, `content` null, a first delta with the role and empty content)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from serve.launcher import serve_models
from serve.model_source import ModelSource
from tests.serve.conftest import _run_in_thread

FIXTURES = Path(__file__).parent / "fixtures"
COMPLETION = json.loads((FIXTURES / "vllm_chat_completion.json").read_text())
CHUNKS = (FIXTURES / "vllm_chat_stream.jsonl").read_text().splitlines()
REAL_COMPLETION = json.loads((FIXTURES / "vllm026_chat_completion.json").read_text())
REAL_CHUNKS = (FIXTURES / "vllm026_chat_stream.jsonl").read_text().splitlines()


@pytest.fixture(scope="module")
def fake_vllm():
    with _replaying(COMPLETION, CHUNKS) as replay:
        yield replay


@pytest.fixture(scope="module")
def real_vllm_client():
    with _replaying(REAL_COMPLETION, REAL_CHUNKS) as (url, _):
        source = ModelSource(name="tuned", url=url, engine="vllm", knows_thinking=True)
        with serve_models([source]) as served:
            yield openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)


@contextmanager
def _replaying(completion: dict, chunks: list[str]):
    """A fake vLLM answering every chat request with `completion`, or `chunks` when streamed."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    received: list[dict] = []

    async def chat(request):
        body = await request.json()
        received.append(body)
        if body.get("stream"):

            async def events():
                for line in chunks:
                    yield f"data: {line}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({k: v for k, v in completion.items() if not k.startswith("_")})

    async def health(request):
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),
        ]
    )
    url, server, thread = _run_in_thread(app)
    try:
        yield url, received
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture(scope="module")
def client(fake_vllm):
    url, _ = fake_vllm
    source = ModelSource(name="tuned", url=url, engine="vllm", knows_thinking=True)
    with serve_models([source]) as served:
        yield openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)


def test_reasoning_reaches_clients_under_both_names(client, fake_vllm):
    raw = client.chat.completions.with_raw_response.create(
        model="tuned", messages=[{"role": "user", "content": "2+2?"}]
    )
    completion = raw.parse()
    message = completion.choices[0].message
    assert message.reasoning == message.reasoning_content == "2 plus 2 makes 4."
    assert message.content == "The answer is 4."
    assert completion.usage.completion_tokens == 21 and completion.usage.total_tokens == 35
    assert raw.headers["x-tuneserve-mode"] == "thinking"
    sent = fake_vllm[1][-1]
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["min_p"]) == (0.6, 0.95, 20, 0)
    assert "repeat_penalty" not in sent  # not a vLLM field


def _streamed(client, model: str) -> tuple[dict[str, str], object]:
    """The streamed text per delta field (reasoning, reasoning_content, content), and usage."""
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "2+2?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    fields = ("reasoning", "reasoning_content", "content")
    text = {f: "".join(getattr(d, f, None) or "" for d in deltas) for f in fields}
    return text, chunks[-1].usage


def test_streamed_vllm_deltas_carry_both_names_and_usage(client, fake_vllm):
    text, usage = _streamed(client, "tuned:chat")
    assert text["reasoning"] == text["reasoning_content"] == "2 plus 2 makes 4."
    assert text["content"] == "The answer is 4."
    assert usage.total_tokens == 35
    assert fake_vllm[1][-1]["chat_template_kwargs"] == {"enable_thinking": False}


def test_real_vllm_026_answers_pass_through_with_both_reasoning_names(real_vllm_client):
    message = (
        real_vllm_client.chat.completions.create(
            model="tuned", messages=[{"role": "user", "content": "Hi"}]
        )
        .choices[0]
        .message
    )
    captured = REAL_COMPLETION["choices"][0]["message"]["reasoning"]
    assert message.reasoning == message.reasoning_content == captured
    assert message.content is None


def test_real_vllm_026_stream_passes_through_with_both_names_and_usage(real_vllm_client):
    text, usage = _streamed(real_vllm_client, "tuned")
    replayed = [json.loads(line)["choices"] for line in REAL_CHUNKS]
    sent = "".join(c[0]["delta"].get("reasoning") or "" for c in replayed if c)
    assert sent and text["reasoning"] == text["reasoning_content"] == sent
    assert not text["content"]
    assert usage.completion_tokens == 12
