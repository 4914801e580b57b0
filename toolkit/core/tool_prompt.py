"""How tools and tool calls are written as text: the Hermes format Qwen3's template uses.

A model's own chat template renders `tools` when it can (Qwen3's does). For a template that
cannot (SmolLM2's, a Llama 3 one), `with_tool_prompt` writes the same words into the messages
instead: the tool list goes into the system message, earlier calls into the assistant text,
tool results into user turns. Training (toolkit/train/templates.py) and the gateway use this one
module, so a model tuned on tool data is served the prompt it learned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_PROBE_NAME = "tuneserve_probe_tool"
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": _PROBE_NAME, "description": "", "parameters": {"type": "object"}},
}


def tool_prompt(tools: list[dict[str, Any]]) -> str:
    """The tools section Qwen3's template writes into the system message."""
    listed = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_HEADER + listed + TOOLS_FOOTER


def format_call(name: str, arguments: object) -> str:
    """One call as the model writes it; `arguments` is an object or its JSON text (text that is
    not JSON is written as given: the model saw the client's own text)."""
    arguments = _parsed(arguments)
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'{CALL_OPEN}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {args}}}\n{CALL_CLOSE}'


def renders_tools(render: Callable[[list[dict[str, Any]], list[dict[str, Any]]], str]) -> bool:
    """Whether a template writes the tool list into the prompt: `render(messages, tools)` is
    tried with a probe tool, which must show up in the text."""
    try:
        text = render([{"role": "user", "content": "hi"}], [_PROBE_TOOL])
    except Exception:  # a template that fails on tools cannot render them
        return False
    return _PROBE_NAME in text


def text_of(content: object) -> str:
    """A message's content as text: a string, the text parts of an array, or nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def call_function(call: object) -> tuple[str, object]:
    """(name, arguments) of an OpenAI `tool_calls` item (or a bare {name, arguments})."""
    function = call.get("function", call) if isinstance(call, dict) else {}
    if not isinstance(function, dict):
        function = {}
    return str(function.get("name", "")), function.get("arguments", {})


def with_tool_prompt(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages for a template without a tools section: the tool list in the system message,
    assistant calls as `<tool_call>` text, tool results as `<tool_response>` user turns
    (consecutive results in one turn, as Qwen3 writes them)."""
    out: list[dict[str, Any]] = []
    if tools:
        prompt = tool_prompt(tools)
        if messages and messages[0].get("role") in ("system", "developer"):
            first = text_of(messages[0].get("content"))
            out.append({"role": "system", "content": f"{first}\n\n{prompt}" if first else prompt})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": prompt})
    for message in messages:
        role = message.get("role")
        if role in ("tool", "function"):
            result = f"{RESPONSE_OPEN}\n{text_of(message.get('content'))}\n{RESPONSE_CLOSE}"
            if out and out[-1].get("role") == "user" and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "_tool_results": True})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [format_call(*call_function(call)) for call in message["tool_calls"]]
            text = text_of(message.get("content"))
            out.append(
                {"role": "assistant", "content": "\n".join([text, *calls] if text else calls)}
            )
        else:
            out.append(dict(message))
    for message in out:
        message.pop("_tool_results", None)
    return out


def has_tool_turns(messages: object) -> bool:
    """Whether a conversation carries earlier tool calls or results."""
    return isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") in ("tool", "function") or bool(m.get("tool_calls")))
        for m in messages
    )


def arguments_as_objects(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant calls with their JSON-text arguments parsed, as templates expect (vLLM and
    llama.cpp do the same): a template's `tojson` then writes them as the model saw them."""
    out = []
    for message in messages:
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not calls:
            out.append(message)
            continue
        fixed = []
        for call in calls:
            name, arguments = call_function(call)
            arguments = _parsed(arguments)
            fixed.append(
                {**call, "type": "function", "function": {"name": name, "arguments": arguments}}
            )
        out.append({**message, "tool_calls": fixed})
    return out


def _parsed(arguments: object) -> object:
    """JSON-text arguments as the object they hold; anything else as it is."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
