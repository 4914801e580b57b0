"""The gateway against real llama.cpp engines, driven by the official openai client and curl."""

from __future__ import annotations

import asyncio
import json
import subprocess

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY
from toolkit.core.modes import SAMPLING

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0)


def _sampling_sent(body: dict) -> dict:
    return {key: body.get(key) for key in ("temperature", "top_p", "top_k", "min_p")}


def test_no_sampling_fields_get_the_mode_defaults_in_header_and_engine(client, engine_bodies):
    raw = client.chat.completions.with_raw_response.create(model="smol", messages=HI, max_tokens=8)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-tuneserve-mode"] == "chat"  # SmolLM2's template has no thinking
    assert raw.headers["x-tuneserve-sampling"] == "temperature=0.7, top_p=0.8, top_k=20, min_p=0"
    (sent,) = engine_bodies
    assert _sampling_sent(sent) == SAMPLING["chat"].as_dict()
    assert sent["repeat_penalty"] == 1.0  # llama-cpp-python's 1.1 must not leak


def test_own_temperature_is_kept(client, engine_bodies):
    raw = client.chat.completions.with_raw_response.create(
        model="smol", messages=HI, max_tokens=4, temperature=0.2, extra_body={"top_k": 3}
    )
    assert raw.headers["x-tuneserve-sampling"] == "temperature=0.2, top_p=0.8, top_k=3, min_p=0"
    assert _sampling_sent(engine_bodies[0]) == {
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 3,
        "min_p": 0.0,
    }


def test_alias_and_tags_switch_the_mode(client, engine_bodies):
    raw = client.chat.completions.with_raw_response.create(
        model="smol:thinking", messages=HI, max_tokens=4
    )
    assert raw.headers["x-tuneserve-mode"] == "thinking"
    assert _sampling_sent(engine_bodies[-1]) == SAMPLING["thinking"].as_dict()
    raw = client.chat.completions.with_raw_response.create(
        model="smol:thinking", messages=[{"role": "user", "content": "hi /no_think"}], max_tokens=4
    )
    assert raw.headers["x-tuneserve-mode"] == "chat"
    raw = client.chat.completions.with_raw_response.create(
        model="smol",
        messages=HI,
        max_tokens=4,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    assert raw.headers["x-tuneserve-mode"] == "thinking"


def test_streaming_sync(client):
    with client.chat.completions.with_streaming_response.create(
        model="smol", messages=HI, max_tokens=12, stream=True, seed=1
    ) as response:
        assert response.headers["x-tuneserve-mode"] == "chat"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_async_client_concurrent_and_streaming(gateway):
    async def main() -> tuple[list[str], str]:
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=API_KEY) as client:
            results = await asyncio.gather(
                *(
                    client.chat.completions.create(model="smol", messages=HI, max_tokens=6)
                    for _ in range(3)
                )
            )
            stream = await client.chat.completions.create(
                model="smol", messages=HI, max_tokens=6, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return [r.choices[0].message.content for r in results], text

    contents, streamed = asyncio.run(main())
    assert all(contents) and streamed


def test_completions_endpoint_streams_and_not(client, engine_bodies):
    completion = client.completions.create(model="smol", prompt="Once upon a", max_tokens=5)
    assert completion.choices[0].text
    stream = client.completions.create(model="smol", prompt="Once", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in stream)
    assert _sampling_sent(engine_bodies[0]) == SAMPLING["chat"].as_dict()


def test_models_lists_names_and_aliases(client):
    ids = {model.id for model in client.models.list()}
    assert {"smol", "smol:thinking", "smol:chat", "qwen", "qwen:thinking", "qwen:chat"} <= ids


def test_curl_works_unchanged(gateway):
    body = json.dumps({"model": "smol", "messages": HI, "max_tokens": 4})
    result = subprocess.run(
        [
            "curl", "-sS", "-D", "/dev/stderr", f"{gateway.base_url}/chat/completions",
            "-H", f"Authorization: Bearer {API_KEY}",
            "-H", "Content-Type: application/json",
            "-d", body,
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "x-tuneserve-mode: chat" in result.stderr.lower()
    assert json.loads(result.stdout)["choices"][0]["message"]["role"] == "assistant"


def test_health_and_metrics(gateway, client):
    client.chat.completions.create(model="smol", messages=HI, max_tokens=2)
    assert httpx.get(f"{gateway.root_url}/health").json()["models"] == {
        "smol": "ready",
        "qwen": "ready",
    }
    metrics = httpx.get(f"{gateway.root_url}/metrics").text
    assert 'tuneserve_requests_total{mode="chat",model="smol",status="200"}' in metrics
    assert 'tuneserve_engine_up{model="qwen"} 1.0' in metrics


@pytest.mark.parametrize(
    ("headers", "content", "status", "code"),
    [
        ({}, json.dumps({"model": "smol", "messages": HI}), 401, "invalid_api_key"),
        (
            {"authorization": "Bearer wrong"},
            json.dumps({"model": "smol", "messages": HI}),
            401,
            "invalid_api_key",
        ),
        (None, json.dumps({"model": "nope", "messages": HI}), 404, "model_not_found"),
        (None, "{not json", 400, None),
        (None, json.dumps({"model": "smol", "messages": "hi"}), 400, None),
        (None, json.dumps({"model": "smol", "messages": HI, "temperature": "hot"}), 400, None),
        (
            None,
            json.dumps({"model": "smol", "messages": HI, "x": "a" * (9 << 20)}),
            413,
            "request_too_large",
        ),
        (None, json.dumps({"model": "smol", "messages": [{"role": "wizard"}]}), 400, None),
        (None, json.dumps({"model": "smol", "messages": HI, "stop": 5}), 400, None),
        # caught by the gateway (llama-cpp-python would answer 500, llama-server ignore it)
        (None, json.dumps({"model": "smol", "messages": HI, "logit_bias": "x"}), 400, None),
    ],
)
def test_errors_are_openai_shaped(gateway, headers, content, status, code):
    headers = {"authorization": f"Bearer {API_KEY}"} if headers is None else headers
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=content,
        headers={**headers, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert error["code"] == code
    if status == 400:
        assert error["type"] == "invalid_request_error"


def test_openai_client_raises_the_matching_errors(gateway, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HI)
    bad = openai.OpenAI(base_url=gateway.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="smol", messages=HI)


def test_unknown_paths_answer_openai_shaped_json(gateway):
    response = httpx.get(f"{gateway.base_url}/nothing-here", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    response = httpx.get(f"{gateway.base_url}/chat/completions", timeout=10)
    assert response.status_code == 405 and response.json()["error"]["message"]
