"""The Responses API mapped onto chat and back, and engine errors in OpenAI's shape (pure)."""

from __future__ import annotations

import json

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from serve.engine_errors import openai_error
from serve.protocol import GatewayError
from serve.response_items import ResponseEvents, chat_to_response
from serve.responses import responses_to_chat

TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}


def test_input_items_become_chat_messages():
    chat = responses_to_chat(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Time?"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_time", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "noon"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "get_time"},
            "max_output_tokens": 20,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "stream": True,
        }
    )
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][1] == {"role": "user", "content": [{"type": "text", "text": "Time?"}]}
    assert [c["id"] for c in chat["messages"][2]["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "noon"}
    assert len(chat["messages"]) == 4
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert chat["max_tokens"] == 20 and chat["stream_options"] == {"include_usage": True}
    assert chat["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": []}, "input"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input"),
    ],
)
def test_what_a_stateless_server_cannot_do_is_a_400(body, param):
    with pytest.raises(GatewayError) as raised:
        responses_to_chat(body)
    assert raised.value.param == param


CHAT = {
    "choices": [
        {
            "message": {
                "role": "assistant",
                "content": "Noon.",
                "reasoning_content": "Look it up.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
}


def test_a_chat_answer_becomes_a_response_the_sdk_reads():
    response = Response.model_validate(chat_to_response(CHAT, {"model": "m", "input": "x"}))
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output_text == "Noon."
    assert response.output[2].call_id == "call_1" and response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 5)


def test_streamed_chunks_become_events_the_sdk_accumulates():
    events = ResponseEvents({"model": "m", "input": "x"})
    raw = events.start()
    for delta in [
        {"reasoning_content": "Look"},
        {"reasoning_content": " it up."},
        {"content": "No"},
        {"content": "on."},
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "function": {"name": "get_time", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
    ]:
        raw += events.feed({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    raw += events.feed({"choices": [], "usage": CHAT["usage"]})
    raw += events.finish_events()
    assert [e["sequence_number"] for e in raw] == list(range(len(raw)))
    state = ResponseStreamState(input_tools=[], text_format=omit)
    adapter = TypeAdapter(ResponseStreamEvent)
    for event in raw:
        state.handle_event(adapter.validate_python(json.loads(json.dumps(event))))
    final = state._completed_response
    assert final is not None and final.output_text == "Noon."
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[2].arguments == "{}" and final.usage.total_tokens == 12


@pytest.mark.parametrize(
    ("status", "error", "code", "param"),
    [
        (  # llama-server
            400,
            {
                "code": 400,
                "type": "exceed_context_size_error",
                "message": "request (9035 tokens) exceeds the available context size (8192 tokens)",
            },
            "context_length_exceeded",
            "messages",
        ),
        (  # vLLM
            400,
            {
                "code": 400,
                "type": "BadRequestError",
                "param": None,
                "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
            },
            "context_length_exceeded",
            "messages",
        ),
        (500, {"code": 500, "type": "server_error", "message": "boom"}, None, None),
        (400, {"code": "invalid_value", "param": "n", "message": "bad n"}, "invalid_value", "n"),
    ],
)
def test_engine_errors_get_string_codes(status, error, code, param):
    out = openai_error(status, error)
    assert set(out) == {"message", "type", "param", "code"}
    assert (out["code"], out["param"]) == (code, param)
    assert out["type"] == ("invalid_request_error" if status == 400 else "server_error")
