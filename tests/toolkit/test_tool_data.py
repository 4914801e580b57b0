"""Tool-calling training data: OpenAI and ShareGPT rows become one shape, render through the
template's tools section (or the served tool prompt), and only the assistant's calls and
answers carry loss."""

from __future__ import annotations

import json
import re

import pytest

from toolkit.core.tool_prompt import tool_prompt
from toolkit.data.formats import RowError, to_example
from toolkit.train.templates import CHATML, QWEN3, tokenize_masked

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
OPENAI_ROW = {
    "tools": [TOOL],
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 3}'},
        {"role": "assistant", "content": "It is 3 C in Oslo."},
    ],
}
EXPECTED = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [{**CALL, "id": "c1"}]},
    {"role": "tool", "content": '{"temp_c": 3}', "tool_call_id": "c1"},
    {"role": "assistant", "content": "It is 3 C in Oslo."},
]


def test_openai_rows_keep_tools_calls_and_results():
    example = to_example(OPENAI_ROW, "messages")
    assert example == {"messages": EXPECTED, "mode": "chat", "tools": [TOOL]}


def test_legacy_function_call_and_function_role():
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {"role": "function", "name": "get_weather", "content": '{"temp_c": 3}'},
            {"role": "assistant", "content": "It is 3 C in Oslo."},
        ]
    }
    messages = to_example(row, "messages")["messages"]
    assert messages[1]["tool_calls"] == [CALL] and messages[2]["role"] == "tool"


@pytest.mark.parametrize("call_role", ["function_call", "tool_call"])
@pytest.mark.parametrize("result_role", ["observation", "function_response"])
def test_sharegpt_function_call_variants(call_role, result_role):
    row = {  # LLaMA-Factory: tools as JSON text, bare function definitions
        "tools": json.dumps([TOOL["function"]]),
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {
                "from": call_role,
                "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}}),
            },
            {"from": result_role, "value": '{"temp_c": 3}'},
            {"from": "gpt", "value": "It is 3 C in Oslo."},
        ],
    }
    example = to_example(row, "sharegpt")
    assert example["tools"] == [TOOL]
    assert example["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [CALL]}
    assert example["messages"][2] == {"role": "tool", "content": '{"temp_c": 3}'}


@pytest.mark.parametrize(
    ("row", "fmt", "reason"),
    [
        ({**OPENAI_ROW, "tools": "[not json"}, "messages", "tools is a string but not JSON"),
        (
            {**OPENAI_ROW, "tools": [{"type": "function"}]},
            "messages",
            "tools[0] has no function name",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                    },
                ]
            },
            "messages",
            "message 1 tool_calls[0] arguments are not JSON",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "x"},
                    {"from": "function_call", "value": "call f"},
                ]
            },
            "sharegpt",
            "turn 1 is a function_call whose value is not JSON",
        ),
    ],
)
def test_bad_tool_rows_say_why(row, fmt, reason):
    with pytest.raises(RowError, match=re.escape(reason)):
        to_example(row, fmt)


@pytest.fixture(scope="module")
def tokenizer(base_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model)


def _split(tokenizer, encoded) -> tuple[str, str]:
    pairs = list(zip(encoded["input_ids"], encoded["labels"], strict=True))
    trained = tokenizer.decode([i for i, label in pairs if label != -100])
    masked = tokenizer.decode([i for i, label in pairs if label == -100])
    return trained, masked


@pytest.mark.parametrize(
    "template", [QWEN3, CHATML], ids=["qwen3-tools-section", "chatml-tool-prompt"]
)
def test_loss_covers_the_calls_and_answers_only(tokenizer, template):
    example = to_example(OPENAI_ROW, "messages")
    encoded = tokenize_masked(
        tokenizer, template, example["messages"], "chat", 1024, True, example["tools"]
    )
    trained, masked = _split(tokenizer, encoded)
    call_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>'
    assert trained.startswith(call_text) and trained.endswith("It is 3 C in Oslo.<|im_end|>")
    assert tool_prompt([TOOL]) in masked  # the tool list is prompt, whichever way it is written
    assert '<tool_response>\n{"temp_c": 3}\n</tool_response>' in masked  # results are not learned
    assert "Weather in Oslo?" in masked and "temp_c" not in trained
