"""The gateway's other OpenAI routes and edges on real llama.cpp engines (both backends):
/v1/responses, GET /v1/models/{id}, /v1/embeddings without an embeddings model, `n` > 1 usage,
the errors SDKs act on, and CORS for browser apps."""

from __future__ import annotations

from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from serve.gateway import Gateway
from tests.serve.conftest import API_KEY

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0)


def test_responses_plain_and_streamed(client, engine_bodies):
    raw = client.responses.with_raw_response.create(
        model="smol", input="Say hi", instructions="Be brief.", max_output_tokens=8
    )
    response = raw.parse()
    assert response.object == "response" and response.output_text
    assert response.usage.output_tokens <= 8 and raw.headers["x-tuneserve-mode"] == "chat"
    sent = engine_bodies[0]
    assert sent["max_tokens"] == 8
    assert (
        "messages" in sent and sent["messages"][0] == {"role": "system", "content": "Be brief."}
    ) or ("Be brief." in sent.get("prompt", ""))
    with client.responses.stream(model="qwen:chat", input="Say hi", max_output_tokens=8) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    # cut at max_output_tokens, as OpenAI says it: response.incomplete
    assert kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and events[-1].response.output[-1].content[0].text == deltas


def test_responses_refuse_what_needs_state(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="smol", input="hi", previous_response_id="resp_1")
    assert raised.value.body["param"] == "previous_response_id"


def test_a_model_by_id(client):
    assert client.models.retrieve("smol").id == "smol"
    assert client.models.retrieve("qwen:chat").root == "qwen"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("../etc/passwd")
    assert raised.value.code == "model_not_found"


def test_embeddings_of_a_chat_model_name_the_flag(client):
    with pytest.raises(openai.NotFoundError, match="--embeddings NAME=PATH"):
        client.embeddings.create(model="smol", input="hi")


@pytest.mark.parametrize("stream", [False, True])
def test_n_choices_and_their_usage(client, stream):
    kwargs = {"model": "smol", "messages": [{"role": "user", "content": "Tell me a story."}]}
    kwargs |= {"n": 3, "max_tokens": 5, "seed": 7}
    if not stream:
        reply = client.chat.completions.create(**kwargs)
        assert [c.index for c in reply.choices] == [0, 1, 2]
        least = sum(5 if c.finish_reason == "length" else 1 for c in reply.choices)
        assert least <= reply.usage.completion_tokens <= 15  # every choice counted
        return
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1, 2] and all(texts.values())


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"temperature": 2.5}, "temperature", None),
        ({"logit_bias": {"1": 500}}, "logit_bias", None),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages",
            "unsupported_content",
        ),
        (
            {"messages": [{"role": "user", "content": "word " * 12_000}]},
            "messages",
            "context_length_exceeded",
        ),
    ],
)
def test_errors_sdks_act_on_are_400s(gateway, body, param, code):
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "smol", "messages": HI, "max_tokens": 4, **body},
        headers={"authorization": f"Bearer {API_KEY}"},
        timeout=120,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_cors_is_off_by_default_and_answers_the_origins_given():
    closed = TestClient(Gateway([]).app)
    preflight = {"origin": "http://app.example", "access-control-request-method": "POST"}
    assert (
        "access-control-allow-origin"
        not in closed.options("/v1/chat/completions", headers=preflight).headers
    )
    opened = TestClient(Gateway([], cors_origins=["http://app.example"]).app)
    answer = opened.options("/v1/chat/completions", headers=preflight)
    assert (
        answer.status_code == 200
        and answer.headers["access-control-allow-origin"] == "http://app.example"
    )
    other = opened.options(
        "/v1/chat/completions", headers={**preflight, "origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    listed = opened.get("/v1/models", headers={"origin": "http://app.example"})
    assert listed.headers["access-control-allow-origin"] == "http://app.example"
    assert "x-tuneserve-mode" in listed.headers["access-control-expose-headers"]


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_completions_echo_and_logprobs(client, stream):
    common = {"model": "smol", "max_tokens": 4, "seed": 3, "stream": stream}
    echoed = client.completions.create(prompt="Once upon a time", echo=True, **common)
    scored = client.completions.create(prompt="Once upon a time", logprobs=2, **common)
    if stream:
        text = "".join(chunk.choices[0].text for chunk in echoed if chunk.choices)
        pieces = [chunk.choices[0].logprobs for chunk in scored if chunk.choices]
        tokens = [t for p in pieces if p for t in p.tokens]
        offsets = [o for p in pieces if p for o in p.text_offset]
        top = [t for p in pieces if p for t in p.top_logprobs]
    else:
        text = echoed.choices[0].text
        logprobs = scored.choices[0].logprobs
        tokens, offsets, top = logprobs.tokens, logprobs.text_offset, logprobs.top_logprobs
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    # the 2 most likely, and the sampled token when it is not among them (llama-cpp-python)
    assert tokens and len(offsets) == len(tokens) and all(1 <= len(t) <= 3 for t in top)
    # offsets count from the prompt's start, as OpenAI's (and llama-cpp-python's) do
    start = len("Once upon a time")
    assert offsets == [start + sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]


class Card(BaseModel):  # bounded fields: an untrained model cannot ramble inside a string
    sky: Literal["sun", "rain"]
    warm: bool


@pytest.mark.parametrize("model", ["qwen:chat", "smol"])
def test_structured_output_is_enforced_by_the_gateway(client, engine_bodies, model):
    # llama-server cannot build its own sampler for a JSON schema with a tool-capable
    # template (Qwen3's): the gateway renders and sends its grammar, on either server
    reply = client.chat.completions.parse(
        model=model, messages=HI, response_format=Card, max_tokens=60, seed=2
    )
    assert isinstance(reply.choices[0].message.parsed, Card)
    assert "grammar" in engine_bodies[0] and "prompt" in engine_bodies[0]


def test_a_long_prompt_gets_the_whole_trained_context(client):
    # 3,000 words: past the 2,048 tokens each of llama-server's 4 slots used to get out of
    # -c 8192, inside SmolLM2's trained 8,192 (the slots now share one cache of that size)
    words = " ".join(["word"] * 3000)
    reply = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": words}], max_tokens=2
    )
    assert reply.usage.prompt_tokens > 3000
