"""Tool calls through the gateway on real llama.cpp engines (native and llama-cpp-python's):
`tool_choice` enforced by a grammar even on an untrained model, the tools reaching the model
through its template (tiny Qwen3) or the documented tool prompt (SmolLM2), streamed
`delta.tool_calls`, and a conversation carrying tool results continuing."""

from __future__ import annotations

import json

import openai
import pytest

from tests.serve.conftest import API_KEY

pytestmark = pytest.mark.slow
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "What is the weather?"}]


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0)


def _prompt(body: dict) -> str:
    """What the model was shown: the gateway renders tool requests on llama.cpp."""
    return body["prompt"]


@pytest.mark.parametrize("model", ["qwen:chat", "smol"])  # untrained qwen would think forever
def test_required_tool_choice_always_answers_a_valid_call(client, engine_bodies, model):
    completion = client.chat.completions.create(
        model=model,
        messages=ASK,
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=80,
        temperature=1.0,
        seed=3,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    arguments = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert arguments["unit"] in ("celsius", "fahrenheit")
    else:
        assert call.function.name == "get_time"
    (sent,) = engine_bodies
    assert "grammar" in sent and "get_weather" in _prompt(sent)


def test_a_named_tool_choice_calls_that_function(client):
    completion = client.chat.completions.create(
        model="qwen:chat",
        messages=ASK,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,  # an untrained model may repeat calls until max_tokens
        max_tokens=60,
        seed=4,
    )
    calls = completion.choices[0].message.tool_calls
    assert calls and {call.function.name for call in calls} == {"get_time"}
    assert all(json.loads(call.function.arguments) == {} for call in calls)


def test_template_tools_or_the_tool_prompt_reach_the_model(client, engine_bodies):
    for model in ("qwen", "smol"):  # Qwen3's template lists tools; SmolLM2's gets the prompt
        client.chat.completions.create(
            model=model, messages=ASK, tools=[WEATHER], max_tokens=4, seed=1
        )
    qwen, smol = (_prompt(body) for body in engine_bodies)
    for prompt in (qwen, smol):
        assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in prompt
        assert prompt.startswith("<|im_start|>system\n# Tools")


def test_tool_choice_none_shows_no_tools_and_parses_nothing(client, engine_bodies):
    completion = client.chat.completions.create(
        model="qwen", messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=8, seed=1
    )
    assert completion.choices[0].message.tool_calls is None
    assert "get_weather" not in _prompt(engine_bodies[0])
    assert "grammar" not in engine_bodies[0]


def test_streamed_calls_arrive_as_delta_tool_calls(client):
    stream = client.chat.completions.create(
        model="qwen:chat",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        stream=True,
        seed=5,
    )
    deltas, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert deltas and deltas[0].id and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.index == 0)
    assert json.loads(arguments)["unit"] in ("celsius", "fahrenheit")


def test_the_sdk_stream_helper_accumulates_the_call(client):
    with client.chat.completions.stream(
        model="smol",
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_tokens=60,
        seed=6,
    ) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["unit"] in ("celsius", "fahrenheit")


@pytest.mark.parametrize("model", ["qwen", "smol"])
def test_a_conversation_with_tool_results_continues(client, engine_bodies, model):
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees and sunny"},
    ]
    completion = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], max_tokens=8, seed=1
    )
    assert completion.choices[0].finish_reason in ("stop", "length", "tool_calls")
    prompt = _prompt(engine_bodies[0])
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"unit": "celsius"}}\n</tool_call>'
    assert call in prompt
    assert "<tool_response>\n21 degrees and sunny\n</tool_response>" in prompt


def test_plain_requests_still_reach_the_engines_chat_endpoint(client, engine_bodies, gateway):
    client.chat.completions.create(model="smol", messages=ASK, max_tokens=4)
    if gateway.backend == "native":  # type: ignore[attr-defined]
        assert "messages" in engine_bodies[0] and "prompt" not in engine_bodies[0]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_bad_tools_are_a_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="qwen", messages=ASK, max_tokens=4, **extra)
    assert raised.value.body["param"] == param
