"""A chat request's tools, checked, and how `tool_choice` is enforced on llama.cpp.

`read_tool_plan` validates `tools`, `tool_choice` and `parallel_tool_calls` as OpenAI does.
On llama.cpp the gateway renders the prompt itself (the engines cannot be told a named
`tool_choice`, and do not enforce `required`), and `tool_grammar` constrains decoding for
`required` and a named function: a GBNF grammar that admits only `<tool_call>` blocks whose
JSON is `{"name": <a tool>, "arguments": <its parameters schema>}`. The JSON part comes from
llama.cpp's own schema converter (shipped with llama-cpp-python).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from serve.protocol import GatewayError
from toolkit.core.tool_prompt import (
    CALL_CLOSE,
    CALL_OPEN,
    arguments_as_objects,
    has_tool_turns,
    with_tool_prompt,
)

if TYPE_CHECKING:
    from serve.engines.base import Engine

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolPlan:
    """What a request asks of tools: the definitions, and which call it demands."""

    tools: list[dict[str, Any]]
    choice: str  # none | auto | required | function
    name: str | None = None  # the function a named tool_choice forces
    parallel: bool = True

    @property
    def offered(self) -> list[dict[str, Any]]:
        """Tools the model is shown (none with `tool_choice: "none"`, as vLLM does)."""
        return [] if self.choice == "none" else self.tools

    @property
    def forced(self) -> bool:
        return self.choice in ("required", "function")


def read_tool_plan(body: dict[str, Any]) -> ToolPlan | None:
    """The request's ToolPlan (None without tools); GatewayError(400) for what OpenAI rejects."""
    if "functions" in body or "function_call" in body:
        raise GatewayError(
            400,
            "'functions' and 'function_call' are deprecated; send 'tools' and 'tool_choice'",
            "functions" if "functions" in body else "function_call",
        )
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise GatewayError(400, "'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise GatewayError(400, "'tool_choice' needs 'tools'", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise GatewayError(400, "'tools' must be an array", "tools")
    names = [_check_tool(index, tool) for index, tool in enumerate(tools)]
    if len(set(names)) != len(names):
        raise GatewayError(400, "'tools' has two functions with the same name", "tools")
    plan_choice, name = _check_choice(choice, names)
    return ToolPlan(tools, plan_choice, name, parallel is not False)


def _check_tool(index: int, tool: object) -> str:
    where = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise GatewayError(
            400, f"{where} must be {{'type': 'function', 'function': {{...}}}}", "tools"
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        raise GatewayError(400, f"{where}.function must be an object", "tools")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise GatewayError(
            400, f"{where}.function.name must be 1-64 letters, digits, _ or -", "tools"
        )
    if not isinstance(function.get("description", ""), str | None):
        raise GatewayError(400, f"{where}.function.description must be a string", "tools")
    if not isinstance(function.get("parameters", {}), dict):
        raise GatewayError(
            400, f"{where}.function.parameters must be a JSON schema object", "tools"
        )
    return name


def _check_choice(choice: object, names: list[str]) -> tuple[str, str | None]:
    if choice is None:
        return "auto", None
    if choice in ("none", "auto", "required"):
        return choice, None  # type: ignore[return-value]
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not (
        isinstance(choice, dict) and choice.get("type") == "function" and isinstance(name, str)
    ):
        raise GatewayError(
            400,
            "'tool_choice' must be none, auto, required or "
            "{'type': 'function', 'function': {'name': ...}}",
            "tool_choice",
        )
    if name not in names:
        raise GatewayError(
            400, f"'tool_choice' names {name!r}, which is not in 'tools'", "tool_choice"
        )
    return "function", name


def shape_for_engine(
    body: dict[str, Any], plan: ToolPlan | None, engine: Engine
) -> tuple[dict[str, Any], bool]:
    """(the chat body to send, whether the gateway must render it itself).

    vLLM renders, enforces and parses tools itself; a template without a tools section only
    gets the tool prompt written into the messages. On llama.cpp the gateway renders: tools
    through the template when it has them, else through the same tool prompt; and a JSON
    `response_format` too, decoded under the gateway's grammar (llama-server fails to build
    its own sampler for one with a tool-capable template).
    """
    messages = body["messages"]
    if plan is None and not has_tool_turns(messages):
        return body, not engine.parses_tools and _response_schema(
            body.get("response_format")
        ) is not None
    offered = plan.offered if plan is not None else []
    if engine.parses_tools:
        if engine.renders_tools:
            return body, False
        return {**body, "messages": with_tool_prompt(messages, offered)}, False
    messages = arguments_as_objects(messages)
    if engine.renders_tools:
        return {**body, "messages": messages, "tools": offered or None}, True
    return {**body, "messages": with_tool_prompt(messages, offered), "tools": None}, True


def completion_grammar(plan: ToolPlan | None, body: dict[str, Any], thinking: str) -> str | None:
    """The GBNF a rendered chat request is decoded under, if any: the calls a `required` or
    named tool_choice demands, else a JSON `response_format`. `thinking` says whether a think
    block comes first: "no", "optional" (the model may open one) or "open" (the prompt did)."""
    if plan is not None and plan.forced:
        tools = (
            plan.tools if plan.name is None else [t for t in plan.tools if _name(t) == plan.name]
        )
        try:
            return _grammar(json.dumps(tools, sort_keys=True), plan.parallel, thinking)
        except Exception as exc:  # the converter rejects a schema it cannot express
            raise GatewayError(
                400, f"a tool's parameters schema cannot be enforced: {str(exc)[:200]}", "tools"
            ) from None
    schema = _response_schema(body.get("response_format"))
    if schema is None:
        return None
    try:
        return _schema_grammar(json.dumps(schema, sort_keys=True), thinking)
    except Exception as exc:
        raise GatewayError(
            400, f"response_format schema cannot be enforced: {str(exc)[:200]}", "response_format"
        ) from None


def _response_schema(response_format: object) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    if response_format.get("type") == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        return schema if isinstance(schema, dict) and schema else {"type": "object"}
    return None


def _name(tool: dict[str, Any]) -> str:
    return tool["function"]["name"]


def _converter(prop_order: dict[str, int]) -> Any:
    from llama_cpp.llama_grammar import SchemaConverter  # llama.cpp's; only where it serves

    return SchemaConverter(
        prop_order=prop_order, allow_fetch=False, dotall=False, raw_pattern=False
    )


_THINK = {  # Qwen3 thinks first: any text without "</" until </think>
    "no": "",
    "optional": 'think ::= ("<think>" ([^<] | "<" [^/])* "</think>" [ \\n]*)?',
    "open": 'think ::= ([^<] | "<" [^/])* "</think>" [ \\n]*',
}


@lru_cache(maxsize=256)
def _grammar(tools_json: str, parallel: bool, thinking: str) -> str:
    converter = _converter({"name": 0, "arguments": 1})
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": _name(tool)},
                "arguments": tool["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in json.loads(tools_json)
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    call = converter.visit(converter.resolve_refs(schema, "tools"), "call")
    block = f'"{_gbnf(CALL_OPEN)}\\n" {call} "\\n{_gbnf(CALL_CLOSE)}"'
    lines = [
        f"root ::= {'think ' if _THINK[thinking] else ''}tool-call"
        + (' ("\\n" tool-call)*' if parallel else ""),
        f"tool-call ::= {block}",
        _THINK[thinking],
    ]
    return "\n".join(lines) + "\n" + converter.format_grammar()


@lru_cache(maxsize=64)
def _schema_grammar(schema_json: str, thinking: str) -> str:
    converter = _converter({})
    value = converter.visit(converter.resolve_refs(json.loads(schema_json), "format"), "answer")
    root = f"root ::= {'think ' if _THINK[thinking] else ''}{value}"
    return "\n".join([root, _THINK[thinking], converter.format_grammar()])


def _gbnf(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
