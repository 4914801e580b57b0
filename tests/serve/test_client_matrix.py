"""Client compatibility matrix: what agent frameworks send, from the clients they use.

The official openai Python and Node SDKs, LangChain's ChatOpenAI, LiteLLM and curl, against
the gateway serving a model taught to call tools in this session (tests/serve/tool_model.py):
chat, streaming, tool calls (auto on a city never seen in training, required, named,
parallel, streamed, continued with the tool's result, Node's `runTools` loop), structured
output, the Responses API, embeddings, and the errors the SDKs act on. `make test` prints the
table at the end (client x feature x engine).

Targets: `llama.cpp` is started here (the native llama-server in CI). `vLLM` is a gateway
already running on a GPU machine (benchmarks/gpu/tools_matrix.sh starts it), named by
TUNESERVE_MATRIX_GATEWAY (base URL, .../v1), TUNESERVE_MATRIX_KEY, TUNESERVE_MATRIX_MODEL
(default `tools`), TUNESERVE_MATRIX_EMBED (an embeddings model, optional) and
TUNESERVE_MATRIX_CORS (an origin it was started with, optional); those tests are `gpu`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from tests.serve.conftest import API_KEY, NATIVE, REPO
from tests.serve.tool_model import TOOLS, time_question, weather_question

pytestmark = pytest.mark.slow
NPM_PREFIX = REPO / ".venv" / "npm"
CITY, OTHER_CITY = "Madrid", "Kyoto"  # never in the training data
ORIGIN = "http://app.example"


@dataclass
class Target:
    engine: str
    base_url: str
    key: str
    model: str = "tools"
    embed_model: str | None = None
    cors_origin: str | None = None


def _remote() -> Target | None:
    url = os.environ.get("TUNESERVE_MATRIX_GATEWAY")
    if not url:
        return None
    return Target(
        "vLLM",
        url,
        os.environ.get("TUNESERVE_MATRIX_KEY", ""),
        os.environ.get("TUNESERVE_MATRIX_MODEL", "tools"),
        os.environ.get("TUNESERVE_MATRIX_EMBED") or None,
        os.environ.get("TUNESERVE_MATRIX_CORS") or None,
    )


@pytest.fixture(scope="module")
def llama_target(tool_model: Path, base_gguf: Path, tmp_path_factory) -> Iterator[Target]:
    from serve.app import serve_models
    from toolkit.export import run_gguf

    models = [f"tools={run_gguf(tool_model, 'q8_0')}"]
    # embeddings need the native llama-server (CI's engine); the fallback says so at start
    embed = [f"embed={base_gguf}"] if NATIVE else []
    with serve_models(
        models,
        embeddings=embed,
        api_key=API_KEY,
        mode="chat",  # the model was taught without thinking
        cors_origins=[ORIGIN],
        log_dir=tmp_path_factory.mktemp("matrix-logs"),
    ) as served:
        yield Target(
            "llama.cpp", served.base_url, API_KEY, "tools", "embed" if embed else None, ORIGIN
        )


@pytest.fixture(
    scope="module",
    params=["llama.cpp", pytest.param("vLLM", marks=pytest.mark.gpu)],
)
def target(request) -> Target:
    if request.param == "vLLM":
        remote = _remote()
        if remote is None:
            pytest.skip(
                "needs a gateway over vLLM: TUNESERVE_MATRIX_GATEWAY (benchmarks/gpu/tools_matrix.sh)"
            )
        return remote
    return request.getfixturevalue("llama_target")


@pytest.fixture(scope="module")
def client(target: Target) -> openai.OpenAI:
    return openai.OpenAI(base_url=target.base_url, api_key=target.key, max_retries=0, timeout=120)


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


GREEDY = {"temperature": 0, "max_tokens": 64}


def calls_of(message) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def continued(city: str) -> list[dict]:
    """A conversation after the model asked for the weather and the tool answered."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }
    return [
        *ask(weather_question(city)),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp_c": 21})},
    ]


class CityCard(BaseModel):
    city: str
    country: str


# --- official Python SDK ----------------------------------------------------------------


@pytest.mark.matrix("python", "models list / retrieve")
def test_python_models(client, target):
    assert target.model in {m.id for m in client.models.list()}
    assert client.models.retrieve(target.model).id == target.model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


@pytest.mark.matrix("python", "chat")
def test_python_chat(client, target):
    reply = client.chat.completions.create(model=target.model, messages=ask("Say hello."), **GREEDY)
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0


@pytest.mark.matrix("python", "stream + include_usage")
def test_python_stream(client, target):
    stream = client.chat.completions.create(
        model=target.model,
        messages=ask("Say hello."),
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0


@pytest.mark.matrix("python", "tools: auto (taught)")
def test_python_tool_auto(client, target):
    reply = client.chat.completions.create(
        model=target.model, messages=ask(weather_question(CITY)), tools=TOOLS, **GREEDY
    )
    assert calls_of(reply.choices[0].message) == [("get_weather", {"city": CITY})]
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.matrix("python", "tools: auto answers plainly")
def test_python_tool_auto_plain(client, target):
    reply = client.chat.completions.create(
        model=target.model, messages=ask("Say hello."), tools=TOOLS, **GREEDY
    )
    assert not reply.choices[0].message.tool_calls and reply.choices[0].message.content


@pytest.mark.matrix("python", "tools: required")
def test_python_tool_required(client, target):
    reply = client.chat.completions.create(
        model=target.model,
        messages=ask("Say hello."),
        tools=TOOLS,
        tool_choice="required",
        **GREEDY,
    )
    calls = calls_of(reply.choices[0].message)
    assert calls and all(
        name in ("get_weather", "get_time") and isinstance(args.get("city"), str)
        for name, args in calls
    )


@pytest.mark.matrix("python", "tools: named")
def test_python_tool_named(client, target):
    reply = client.chat.completions.create(
        model=target.model,
        messages=ask(weather_question(CITY)),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        **GREEDY,
    )
    calls = calls_of(reply.choices[0].message)
    assert calls and {name for name, _ in calls} == {"get_time"}


@pytest.mark.matrix("python", "tools: parallel")
def test_python_tool_parallel(client, target):
    reply = client.chat.completions.create(
        model=target.model,
        messages=ask(f"Weather and time in {OTHER_CITY}?"),
        tools=TOOLS,
        **GREEDY,
    )
    assert calls_of(reply.choices[0].message) == [
        ("get_weather", {"city": OTHER_CITY}),
        ("get_time", {"city": OTHER_CITY}),
    ]


@pytest.mark.matrix("python", "tools: streamed")
def test_python_tool_stream(client, target):
    with client.chat.completions.stream(
        model=target.model, messages=ask(time_question(CITY)), tools=TOOLS, **GREEDY
    ) as stream:
        final = stream.get_final_completion()
    assert calls_of(final.choices[0].message) == [("get_time", {"city": CITY})]


@pytest.mark.matrix("python", "tools: result continues")
def test_python_tool_result(client, target):
    reply = client.chat.completions.create(
        model=target.model, messages=continued(CITY), tools=TOOLS, **GREEDY
    )
    message = reply.choices[0].message
    assert not message.tool_calls and "21" in message.content


@pytest.mark.matrix("python", "structured output .parse()")
def test_python_parse(client, target):
    reply = client.chat.completions.parse(
        model=target.model,
        messages=ask(f"Describe {CITY} as JSON."),
        response_format=CityCard,
        **GREEDY,
    )
    assert isinstance(reply.choices[0].message.parsed, CityCard)


@pytest.mark.matrix("python", "responses: text, tools, stream")
def test_python_responses(client, target):
    text = client.responses.create(
        model=target.model,
        input="Say hello.",
        instructions="Be brief.",
        max_output_tokens=32,
        temperature=0,
    )
    assert text.output_text and text.status in ("completed", "incomplete")
    flat = [{"type": "function", **tool["function"]} for tool in TOOLS]
    called = client.responses.create(
        model=target.model,
        input=weather_question(CITY),
        tools=flat,
        temperature=0,
        max_output_tokens=64,
    )
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": CITY})
    followed = client.responses.create(
        model=target.model,
        input=[
            {"role": "user", "content": weather_question(CITY)},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": json.dumps({"temp_c": 21}),
            },
        ],
        tools=flat,
        temperature=0,
        max_output_tokens=64,
    )
    assert "21" in followed.output_text
    with client.responses.stream(
        model=target.model,
        input=time_question(CITY),
        tools=flat,
        temperature=0,
        max_output_tokens=64,
    ) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_response()
    assert {
        "response.created",
        "response.function_call_arguments.delta",
        "response.completed",
    } <= kinds
    assert [
        (i.name, json.loads(i.arguments)) for i in final.output if i.type == "function_call"
    ] == [("get_time", {"city": CITY})]


@pytest.mark.matrix("python", "errors the SDK acts on")
def test_python_errors(client, target):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=target.model, messages=ask("hi"), temperature=3)
    assert raised.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=target.model, messages=ask("word " * 50_000), max_tokens=4
        )
    assert raised.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=ask("hi"))
    assert raised.value.code == "model_not_found"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError):  # a text model: a 400, never a retried 500
        client.chat.completions.create(
            model=target.model,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}],
        )


@pytest.mark.matrix("python", "n=2 usage")
def test_python_n_usage(client, target):
    reply = client.chat.completions.create(
        model=target.model,
        messages=ask("Tell me a story."),
        n=2,
        max_tokens=6,
        temperature=1.0,
        seed=1,
    )
    assert len(reply.choices) == 2
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 12


@pytest.mark.matrix("python", "embeddings")
def test_python_embeddings(client, target):
    if target.embed_model is None:
        pytest.skip(f"{target.engine}: no embeddings model served here")
    vectors = client.embeddings.create(model=target.embed_model, input=["a cat", "a dog"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == len(vectors[1].embedding) > 8
    with pytest.raises(openai.NotFoundError, match="--embeddings"):
        client.embeddings.create(model=target.model, input="a cat")


def needs(module: str, target: Target) -> None:
    """Every client is installed here (the `dev` extra); a GPU machine may carry fewer."""
    import importlib.util

    if target.engine != "llama.cpp" and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed on this machine")


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
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": CITY})]


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
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": CITY})
    ]


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
    assert [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in out["calls"]
    ] == [("get_weather", {"city": CITY})]


@pytest.mark.matrix("node", "runTools loop")
def test_node_run_tools(target):
    out = node(target, "runTools")
    assert out["seen"] == [{"city": CITY}] and "21" in out["content"]


@pytest.mark.matrix("node", "responses")
def test_node_responses(target):
    calls = [
        item for item in node(target, "responses")["output"] if item["type"] == "function_call"
    ]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": CITY})
    ]


def test_the_tool_model_was_taught_by_training(tool_model):
    """The calls above come from training: the loss on the assistant's calls and answers fell
    (tests/serve/tool_model.py; the untrained model is not asked, its GGUF export would cost
    another minute)."""
    steps = [json.loads(line) for line in (tool_model / "metrics.jsonl").read_text().splitlines()]
    losses = [step["loss"] for step in steps if "loss" in step]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 / 3
