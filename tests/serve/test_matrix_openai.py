"""Client compatibility matrix, the official openai Python SDK: chat, streams, tool calls
(auto on cities never seen in training, required, named, parallel, streamed, continued with the
tool's result), structured output, the Responses API, embeddings, `n`, and the errors the SDK
acts on. Targets and helpers: tests/serve/matrix.py."""

from __future__ import annotations

import json

import openai
import pytest

from tests.serve.matrix import (
    CITY,
    GREEDY,
    OTHER_CITY,
    CityCard,
    ask,
    asked_for,
    calls_of,
    continued,
)
from tests.serve.tool_model import TOOLS, time_question, weather_question

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(target) -> openai.OpenAI:
    return openai.OpenAI(base_url=target.base_url, api_key=target.key, max_retries=0, timeout=120)


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
    assert asked_for(calls_of(reply.choices[0].message), "get_weather", "get_time")


@pytest.mark.matrix("python", "tools: streamed")
def test_python_tool_stream(client, target):
    with client.chat.completions.stream(
        model=target.model, messages=ask(time_question(CITY)), tools=TOOLS, **GREEDY
    ) as stream:
        final = stream.get_final_completion()
    assert asked_for(calls_of(final.choices[0].message), "get_time")


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
    assert asked_for([(call.name, json.loads(call.arguments))], "get_weather")
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
    assert followed.output_text and not [i for i in followed.output if i.type == "function_call"]
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
    calls = [(i.name, json.loads(i.arguments)) for i in final.output if i.type == "function_call"]
    assert asked_for(calls, "get_time")


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
    assert [c.index for c in reply.choices] == [0, 1]
    # each choice made 6 tokens when cut by max_tokens, at least 1 when it stopped: counting
    # only one choice (llama-server's own merge) falls short of the sum
    least = sum(6 if c.finish_reason == "length" else 1 for c in reply.choices)
    assert least <= reply.usage.completion_tokens <= 12


@pytest.mark.matrix("python", "embeddings")
def test_python_embeddings(client, target):
    if target.embed_model is None:
        # llama.cpp serves embeddings on the native llama-server, which `make install` builds
        assert target.engine != "llama.cpp", "no native llama-server: run `make install`"
        pytest.skip(f"{target.engine}: the gateway was started without an embeddings model")
    vectors = client.embeddings.create(model=target.embed_model, input=["a cat", "a dog"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == len(vectors[1].embedding) > 8
    with pytest.raises(openai.NotFoundError, match="--embeddings"):
        client.embeddings.create(model=target.model, input="a cat")


def test_the_tool_model_was_taught_by_training(tool_model):
    """The calls above come from training: the loss on the assistant's calls and answers fell
    (tests/serve/tool_model.py; the untrained model is not asked, its GGUF export would cost
    another minute)."""
    steps = [json.loads(line) for line in (tool_model / "metrics.jsonl").read_text().splitlines()]
    losses = [step["loss"] for step in steps if "loss" in step]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 / 3
