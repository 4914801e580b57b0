"""Row formats (messages, sharegpt, alpaca, problem_solution, text) -> one conversation shape.

Every row becomes `{"messages": [...], "mode": "thinking"|"chat"}` (plus `tools` when it has
tool definitions, see tool_rows.py); assistant turns keep their reasoning in
`reasoning_content`, which Qwen3-style templates render inside <think>...</think>, and their
calls in `tool_calls`. Pure functions: they raise RowError with the reason, the caller adds
file and line.
"""

from __future__ import annotations

import re
from typing import Any

from toolkit.core.modes import MODES
from toolkit.data.row_errors import RowError, shown
from toolkit.data.tool_rows import (
    SHAREGPT_CALL_ROLES,
    SHAREGPT_RESULT_ROLES,
    message_calls,
    row_tools,
    sharegpt_calls,
    tool_message,
)

__all__ = ["FORMATS", "RowError", "detect_format", "shown", "to_example"]

FORMATS = ("messages", "sharegpt", "alpaca", "problem_solution", "text")
ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "tool": "tool",
}
THINK = re.compile(r"^\s*<think>(.*?)</think>\s*(.*)$", re.DOTALL)


def detect_format(row: dict[str, Any]) -> str:
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        turns = row["conversations"]
        first = turns[0] if isinstance(turns, list) and turns else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    if "problem" in row and ("generated_solution" in row or "solution" in row):
        return "problem_solution"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "text" in row:
        return "text"
    keys = ", ".join(shown(key, 30) for key in sorted(row)[:8]) + (", ..." if len(row) > 8 else "")
    raise RowError(
        f"cannot tell the format from the keys [{keys}]; expected messages, conversations, "
        "instruction/output, problem/generated_solution or text"
    )


def split_thinking(text: str) -> tuple[str | None, str]:
    """`<think>R</think> A` -> ("R", "A"); text without a think block -> (None, text)."""
    match = THINK.match(text)
    if not match:
        return None, text
    return match.group(1).strip(), match.group(2).strip()


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _check_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not messages:
        raise RowError("the conversation is empty")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowError(f"message {index} is not an object")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or object is unhashable
            raise RowError(
                f"message {index} has role {shown(role)}; expected one of {sorted(ROLES)}"
            )
        _text(message.get("content"), f"message {index} content")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("the conversation has no assistant turn to learn from")
    return messages


def _assistant(content: str, reasoning: str | None) -> dict[str, Any]:
    if reasoning is None:
        reasoning, content = split_thinking(content)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def from_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    raw = row.get("messages", row.get("conversations"))
    if not isinstance(raw, list):
        raise RowError("messages must be a list of {role, content} objects")
    messages = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise RowError(f"message {index} is not an object")
        role = message.get("role")
        if role == "assistant":
            calls = message_calls(message, index)
            content = message.get("content")
            content = "" if content is None and calls else content
            content = _text(content, f"message {index} content")
            reasoning = message.get("reasoning_content", message.get("reasoning"))
            turn = _assistant(content, reasoning if isinstance(reasoning, str) else None)
            messages.append({**turn, "tool_calls": calls} if calls else turn)
        elif role in ("tool", "function"):
            messages.append(tool_message(message.get("content"), index, message))
        else:
            messages.append({"role": role, "content": message.get("content")})
    return _check_turns(messages)


def from_sharegpt(row: dict[str, Any]) -> list[dict[str, Any]]:
    raw = row.get("conversations")
    if not isinstance(raw, list):
        raise RowError("conversations must be a list of {from, value} objects")
    messages = []
    for index, turn in enumerate(raw):
        if not isinstance(turn, dict):
            raise RowError(f"turn {index} is not an object")
        speaker = str(turn.get("from", "")).lower()
        if speaker in SHAREGPT_CALL_ROLES:
            calls = sharegpt_calls(turn.get("value"), index)
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            continue
        if speaker in SHAREGPT_RESULT_ROLES:
            messages.append(tool_message(turn.get("value"), index, {}))
            continue
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise RowError(f"turn {index} is from {shown(turn.get('from'))}; expected human or gpt")
        value = _text(turn.get("value"), f"turn {index} value")
        messages.append(
            _assistant(value, None) if role == "assistant" else {"role": role, "content": value}
        )
    return _check_turns(messages)


def from_alpaca(row: dict[str, Any]) -> list[dict[str, Any]]:
    instruction = _text(row.get("instruction"), "instruction")
    extra = row.get("input") or ""
    prompt = f"{instruction}\n\n{_text(extra, 'input')}" if extra else instruction
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": _text(row["system"], "system")})
    messages += [
        {"role": "user", "content": prompt},
        _assistant(_text(row.get("output"), "output"), None),
    ]
    return _check_turns(messages)


def from_problem_solution(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's reasoning data: the solution is the thinking, its final answer the reply."""
    problem = _text(row.get("problem"), "problem")
    solution = _text(row.get("generated_solution", row.get("solution")), "generated_solution")
    reasoning, answer = split_thinking(solution)
    if reasoning is None:
        reasoning = solution.strip()
        answer = str(row.get("expected_answer") or _last_boxed(solution) or solution.strip())
    return _check_turns(
        [
            {"role": "user", "content": problem},
            {"role": "assistant", "content": answer, "reasoning_content": reasoning},
        ]
    )


def _last_boxed(text: str) -> str | None:
    found = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return found[-1] if found else None


def from_text(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain text is trained on whole: one assistant turn with no prompt."""
    text = _text(row.get("text"), "text")
    if not text.strip():
        raise RowError("text is empty")
    return [{"role": "assistant", "content": text}]


CONVERTERS = {
    "messages": from_messages,
    "sharegpt": from_sharegpt,
    "alpaca": from_alpaca,
    "problem_solution": from_problem_solution,
    "text": from_text,
}


def detect_mode(messages: list[dict[str, Any]]) -> str:
    return "thinking" if any(m.get("reasoning_content") for m in messages) else "chat"


def to_example(row: dict[str, Any], fmt: str, mode: str | None = None) -> dict[str, Any]:
    """One source row in format `fmt` (not auto) -> {"messages", "mode"}."""
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, got {type(row).__name__}")
    messages = CONVERTERS[fmt](row)
    row_mode = row.get("mode") if row.get("mode") in MODES else None
    mode = mode or row_mode or detect_mode(messages)
    if mode == "chat":  # a chat example is trained with thinking off, so its reasoning goes
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    example: dict[str, Any] = {"messages": messages, "mode": mode}
    tools = row_tools(row) if fmt in ("messages", "sharegpt") else None
    if tools:
        example["tools"] = tools
    return example
