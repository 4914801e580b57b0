"""Tool calls as text and back, table-style: the tool prompt, parsing whole and streamed
answers, `tool_choice` checks, the grammar that enforces it, and what each engine is sent."""

from __future__ import annotations

import json

import pytest

from serve.engines import LlamaCppEngine, VllmEngine
from serve.protocol import GatewayError
from serve.tool_calls import ToolChunkParser, parse_response, split_calls
from serve.tools import completion_grammar, read_tool_plan, shape_for_engine
from toolkit.core.tool_prompt import format_call, tool_prompt, with_tool_prompt
from toolkit.train.templates import CHATML, QWEN3

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        (CALL, None, [("get_weather", {"city": "Paris"})]),
        ("Let me look.\n" + CALL, "Let me look.", [("get_weather", {"city": "Paris"})]),
        (
            CALL + "\n" + CALL.replace("Paris", "Rome"),
            None,
            [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})],
        ),
        (
            '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>',
            None,
            [("f", {"a": 1})],
        ),
        ('<tool_call>\n{"name": "f", "arguments": {}}', None, [("f", {})]),  # cut before the tag
        ("no call here", "no call here", []),
        (
            '<tool_call>{"name": "f", "arguments": {"a": </tool_call>',
            '<tool_call>{"name": "f", "arguments": {"a": </tool_call>',
            [],
        ),
        (
            '<tool_call>{"arguments": {}}</tool_call>',
            '<tool_call>{"arguments": {}}</tool_call>',
            [],
        ),
    ],
)
def test_split_calls(text, content, calls):
    found_content, found = split_calls(text)
    assert found_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in found] == calls
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in found)


def test_a_whole_answer_with_calls_finishes_with_tool_calls():
    response = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": CALL}, "finish_reason": "stop"}
        ]
    }
    choice = parse_response(response)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_streamed_calls_survive_any_chunking(size):
    text = "Sure.\n" + CALL + "\n" + CALL.replace("Paris", "Rome")
    parser = ToolChunkParser()
    content, calls, finish = "", [], None
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    for piece in pieces + [None]:
        delta = {"content": piece} if piece is not None else {}
        chunk = {
            "choices": [{"index": 0, "delta": delta, "finish_reason": None if piece else "stop"}]
        }
        choice = parser.rewrite(chunk)["choices"][0]
        content += choice["delta"].get("content") or ""
        calls += choice["delta"].get("tool_calls", [])
        finish = choice["finish_reason"] or finish
    assert content.strip() == "Sure."
    assert [c["index"] for c in calls] == [0, 1]
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris", "Rome"]
    assert finish == "tool_calls"


def test_whitespace_before_a_streamed_call_is_not_content():
    parser = ToolChunkParser()
    sent = []
    for piece in ["\n", "\n<to", "ol_call>", CALL.removeprefix("<tool_call>"), None]:
        delta = {"content": piece} if piece else {}
        chunk = {
            "choices": [{"index": 0, "delta": delta, "finish_reason": None if piece else "stop"}]
        }
        sent.append(parser.rewrite(chunk)["choices"][0]["delta"])
    assert "".join(d.get("content") or "" for d in sent) == ""
    assert [c["function"]["name"] for d in sent for c in d.get("tool_calls", [])] == ["get_weather"]


def test_a_streamed_text_that_only_looks_like_a_tag_is_content():
    parser = ToolChunkParser()
    out = ""
    for piece in ["a <tool", "_ca", "ll is a tag name", None]:
        delta = {"content": piece} if piece else {}
        chunk = {
            "choices": [{"index": 0, "delta": delta, "finish_reason": None if piece else "stop"}]
        }
        choice = parser.rewrite(chunk)["choices"][0]
        out += choice["delta"].get("content") or ""
        assert "tool_calls" not in choice["delta"]
    assert out == "a <tool_call is a tag name"
    assert choice["finish_reason"] == "stop"


def test_the_tool_prompt_is_qwen3s_tools_section():
    from serve.chat_template import render_chat

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    by_template = render_chat(QWEN3, messages, tools=[TOOL])
    by_prompt = render_chat(CHATML, with_tool_prompt(messages, [TOOL]))
    assert by_template == by_prompt
    assert tool_prompt([TOOL]) in by_template


def test_history_is_written_as_text_for_a_template_without_tools():
    messages = [*HISTORY, {"role": "tool", "tool_call_id": "2", "content": "sunny"}]
    out = with_tool_prompt(messages, None)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[1]["content"] == CALL == format_call("get_weather", {"city": "Paris"})
    assert (
        out[2]["content"]
        == "<tool_response>\n21 C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": "x"}, "tools"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools"),
        ({"tools": [TOOL, TOOL]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools"),
        ({"tools": [TOOL], "tool_choice": "any"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"function_call": "auto"}, "function_call"),
    ],
)
def test_bad_tools_are_rejected_naming_the_field(body, param):
    with pytest.raises(GatewayError) as raised:
        read_tool_plan(body)
    assert raised.value.status == 400 and raised.value.param == param


def test_tool_choice_forms():
    assert read_tool_plan({}) is None and read_tool_plan({"tools": []}) is None
    plan = read_tool_plan({"tools": [TOOL]})
    assert (plan.choice, plan.forced, plan.parallel) == ("auto", False, True)
    plan = read_tool_plan({"tools": [TOOL], "tool_choice": "none"})
    assert plan.offered == []
    named = {"type": "function", "function": {"name": "get_weather"}}
    plan = read_tool_plan({"tools": [TOOL], "tool_choice": named, "parallel_tool_calls": False})
    assert (plan.choice, plan.name, plan.forced, plan.parallel) == (
        "function",
        "get_weather",
        True,
        False,
    )


@pytest.mark.parametrize("thinking", ["no", "optional", "open"])
def test_required_and_named_choices_get_a_grammar_that_parses(thinking):
    from llama_cpp.llama_grammar import LlamaGrammar

    plan = read_tool_plan({"tools": [TOOL], "tool_choice": "required"})
    grammar = completion_grammar(plan, {}, thinking)
    LlamaGrammar.from_string(grammar, verbose=False)  # raises on a malformed grammar
    assert grammar.startswith(
        "root ::= think tool-call" if thinking != "no" else "root ::= tool-call"
    )
    assert '"<tool_call>\\n" call "\\n</tool_call>"' in grammar
    assert completion_grammar(read_tool_plan({"tools": [TOOL]}), {}, thinking) is None
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    LlamaGrammar.from_string(
        completion_grammar(None, {"response_format": schema}, thinking), verbose=False
    )


def test_an_unenforceable_schema_is_a_400():
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"$ref": "https://x/y.json"}},
    }
    plan = read_tool_plan({"tools": [tool], "tool_choice": "required"})
    with pytest.raises(GatewayError) as raised:
        completion_grammar(plan, {}, "no")
    assert raised.value.param == "tools"


def _vllm(tmp_path, template) -> VllmEngine:
    folder = tmp_path / str(abs(hash(template)))
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return VllmEngine("m", folder)


HISTORY = [
    {"role": "user", "content": "Weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "1", "content": "21 C"},
]


def test_vllm_gets_tools_as_sent_or_the_tool_prompt_when_its_template_has_none(tmp_path):
    body = {"messages": HISTORY, "tools": [TOOL], "tool_choice": "required"}
    plan = read_tool_plan(body)
    assert shape_for_engine(body, plan, _vllm(tmp_path, QWEN3)) == (body, False)
    shaped, render = shape_for_engine(body, plan, _vllm(tmp_path, CHATML))
    assert not render and shaped["tools"] == [TOOL] and shaped["tool_choice"] == "required"
    assert shaped["messages"][0]["content"] == tool_prompt([TOOL])
    assert [m["role"] for m in shaped["messages"]] == ["system", "user", "assistant", "user"]


@pytest.mark.slow  # reading the GGUF's vocabulary for its template: seconds
def test_llamacpp_tool_requests_are_rendered_by_the_gateway(base_gguf):
    engine = LlamaCppEngine("m", base_gguf)  # SmolLM2: a template without tools
    plan = read_tool_plan({"tools": [TOOL]})
    shaped, render = shape_for_engine({"messages": HISTORY, "tools": [TOOL]}, plan, engine)
    assert render and shaped["tools"] is None
    assert shaped["messages"][0] == {"role": "system", "content": tool_prompt([TOOL])}
    assert shaped["messages"][2]["content"] == CALL
    assert shape_for_engine({"messages": HISTORY}, None, engine)[1]  # tool turns, no tools
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    assert shape_for_engine(plain, None, engine) == (plain, False)
