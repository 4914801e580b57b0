"""Client compatibility matrix, the other clients agents use: LangChain's ChatOpenAI, LiteLLM,
curl and the official openai Node SDK (its `runTools` loop included). Targets and helpers:
tests/serve/matrix.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve.conftest import REPO
from tests.serve.matrix import CITY, GREEDY, CityCard, Target, ask, asked_for, needs
from tests.serve.tool_model import TOOLS, weather_question

pytestmark = pytest.mark.slow
NPM_PREFIX = REPO / ".venv" / "npm"


# --- LangChain --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_model(target: Target):
    needs("langchain_openai", target)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=target.model,
        base_url=target.base_url,
        api_key=target.key or "none",
        temperature=0,
        max_tokens=64,
        max_retries=0,
    )


@pytest.mark.matrix("langchain", "invoke")
def test_langchain_invoke(chat_model):
    assert chat_model.invoke("Say hello.").content


@pytest.mark.matrix("langchain", "stream")
def test_langchain_stream(chat_model):
    assert "".join(chunk.content for chunk in chat_model.stream("Say hello.")).strip()


@pytest.mark.matrix("langchain", "bind_tools")
def test_langchain_bind_tools(chat_model):
    message = chat_model.bind_tools(TOOLS).invoke(weather_question(CITY))
    assert asked_for([(c["name"], c["args"]) for c in message.tool_calls], "get_weather")


@pytest.mark.matrix("langchain", "with_structured_output")
def test_langchain_structured(chat_model):
    assert isinstance(
        chat_model.with_structured_output(CityCard).invoke(f"Describe {CITY}."), CityCard
    )


# --- LiteLLM ----------------------------------------------------------------------------


def _litellm(target: Target, **kwargs):
    needs("litellm", target)
    import litellm

    return litellm.completion(
        model=f"openai/{target.model}",
        api_base=target.base_url,
        api_key=target.key or "none",
        temperature=0,
        max_tokens=64,
        **kwargs,
    )


@pytest.mark.matrix("litellm", "completion")
def test_litellm_completion(target):
    assert _litellm(target, messages=ask("Say hello.")).choices[0].message.content


@pytest.mark.matrix("litellm", "stream")
def test_litellm_stream(target):
    chunks = _litellm(target, messages=ask("Say hello."), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()


@pytest.mark.matrix("litellm", "tools")
def test_litellm_tools(target):
    message = _litellm(target, messages=ask(weather_question(CITY)), tools=TOOLS).choices[0].message
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert asked_for(calls, "get_weather")


@pytest.mark.matrix("litellm", "response_format")
def test_litellm_response_format(target):
    content = (
        _litellm(target, messages=ask(f"Describe {CITY}."), response_format=CityCard)
        .choices[0]
        .message.content
    )
    CityCard.model_validate_json(content)


# --- curl -------------------------------------------------------------------------------


def curl(target: Target, path: str, body: dict | None = None, *extra: str) -> tuple[int, str]:
    args = [
        "curl",
        "-s",
        "-w",
        "\n%{http_code}",
        f"{target.base_url}{path}",
        "-H",
        f"Authorization: Bearer {target.key}",
    ]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(
        [*args, *extra], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    text, _, status = out.rpartition("\n")
    return int(status), text


@pytest.mark.matrix("curl", "chat + tools")
def test_curl_chat_and_tools(target):
    status, text = curl(
        target,
        "/chat/completions",
        {"model": target.model, "messages": ask("Say hello."), **GREEDY},
    )
    assert status == 200 and json.loads(text)["choices"][0]["message"]["content"]
    body = {
        "model": target.model,
        "messages": ask(weather_question(CITY)),
        "tools": TOOLS,
        "tool_choice": "required",
        **GREEDY,
    }
    status, text = curl(target, "/chat/completions", body)
    call = json.loads(text)["choices"][0]["message"]["tool_calls"][0]["function"]
    assert status == 200 and call["name"] in ("get_weather", "get_time")


@pytest.mark.matrix("curl", "responses")
def test_curl_responses(target):
    status, text = curl(
        target,
        "/responses",
        {"model": target.model, "input": "Say hello.", "max_output_tokens": 16},
    )
    assert status == 200 and json.loads(text)["object"] == "response"


@pytest.mark.matrix("curl", "CORS preflight")
def test_curl_cors(target):
    if target.cors_origin is None:
        pytest.skip(f"{target.engine}: the gateway was started without --cors-origin")
    args = [
        "-X",
        "OPTIONS",
        "-i",
        "-H",
        f"Origin: {target.cors_origin}",
        "-H",
        "Access-Control-Request-Method: POST",
    ]
    args += ["-H", "Access-Control-Request-Headers: authorization, content-type"]
    status, text = curl(target, "/chat/completions", None, *args)
    assert status == 200 and f"access-control-allow-origin: {target.cors_origin}" in text.lower()
    status, text = curl(target, "/models", None, "-i", "-H", "Origin: http://elsewhere.example")
    assert "access-control-allow-origin" not in text.lower()


# --- official Node SDK ------------------------------------------------------------------


def node(target: Target, feature: str) -> dict:
    if shutil.which("node") is None and target.engine != "llama.cpp":
        pytest.skip(f"{target.engine}: no node on this machine")
    assert (NPM_PREFIX / "node_modules" / "openai").is_dir(), (
        "make install puts openai@6 in .venv/npm"
    )
    script = Path(__file__).with_name("node_matrix.cjs")
    done = subprocess.run(
        ["node", str(script), str(NPM_PREFIX), target.base_url, target.key, target.model, feature],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.matrix("node", "chat + stream")
def test_node_chat(target):
    assert node(target, "chat")["content"] and node(target, "stream")["content"].strip()


@pytest.mark.matrix("node", "tools")
def test_node_tools(target):
    out = node(target, "tools")
    assert out["finish"] == "tool_calls"
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in out["calls"]]
    assert asked_for(calls, "get_weather")


@pytest.mark.matrix("node", "runTools loop")
def test_node_run_tools(target):
    out = node(target, "runTools")
    # the runner ran get_weather once, sent its result, and the model answered from it
    assert asked_for([("get_weather", args) for args in out["seen"]], "get_weather")
    assert out["content"]


@pytest.mark.matrix("node", "responses")
def test_node_responses(target):
    calls = [
        item for item in node(target, "responses")["output"] if item["type"] == "function_call"
    ]
    assert asked_for([(c["name"], json.loads(c["arguments"])) for c in calls], "get_weather")
