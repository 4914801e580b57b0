"""Tool-calling rows: a row's `tools`, assistant `tool_calls` and the ShareGPT variants.

OpenAI messages carry `tools` beside `messages`, calls in an assistant's `tool_calls` (or the
older `function_call`) and results in `tool` (or `function`) messages. ShareGPT data
(LLaMA-Factory, Glaive) writes calls as `function_call` turns whose value is the call's JSON
and results as `observation` turns, with `tools` often a JSON string. All of it becomes
OpenAI-shaped calls with parsed `arguments`, which the chat template renders.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit.data.row_errors import RowError, shown

SHAREGPT_CALL_ROLES = {"function_call", "tool_call"}
SHAREGPT_RESULT_ROLES = {"observation", "function_response", "tool_response"}


def row_tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The row's tool definitions in OpenAI form, or None when it has none."""
    tools = row.get("tools")
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            raise RowError(f"tools is a string but not JSON: {shown(tools)}") from None
    if not isinstance(tools, list):
        raise RowError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
    return [_tool(index, tool) for index, tool in enumerate(tools)]


def _tool(index: int, tool: object) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise RowError(f"tools[{index}] is not an object")
    function = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RowError(f"tools[{index}] has no function name: {shown(tool)}")
    return {"type": "function", "function": function}


def message_calls(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """An assistant message's calls (`tool_calls`, or the older `function_call`)."""
    calls = message.get("tool_calls")
    if calls is None and message.get("function_call") is not None:
        calls = [{"type": "function", "function": message["function_call"]}]
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise RowError(f"message {index} tool_calls must be a list")
    return [_call(call, f"message {index} tool_calls[{n}]") for n, call in enumerate(calls)]


def sharegpt_calls(value: object, index: int) -> list[dict[str, Any]]:
    """A ShareGPT `function_call` turn's value: one call's JSON, or a list of them."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError(f"turn {index} is a function_call whose value is not JSON") from None
    calls = value if isinstance(value, list) else [value]
    return [_call(call, f"turn {index} function_call") for call in calls]


def _call(call: object, where: str) -> dict[str, Any]:
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RowError(f"{where} needs a function name: {shown(call)}")
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise RowError(f"{where} arguments are not JSON: {shown(arguments)}") from None
    if not isinstance(arguments, dict):
        raise RowError(f"{where} arguments must be a JSON object, got {shown(arguments)}")
    out: dict[str, Any] = {
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments},
    }
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def tool_message(content: object, index: int, extra: dict[str, Any]) -> dict[str, Any]:
    """A tool result; a JSON value that is not text is written as JSON."""
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False)
    message: dict[str, Any] = {"role": "tool", "content": content}
    for key in ("tool_call_id", "name"):
        if isinstance(extra.get(key), str):
            message[key] = extra[key]
    return message
