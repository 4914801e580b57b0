"""A model's Jinja chat template rendered the way transformers renders it.

The gateway renders a template itself where the engine cannot be asked what it needs (per
request thinking on llama-cpp-python's server, tools and `tool_choice` on llama.cpp). It must
write the prompt the model was trained on: transformers' `tojson` (no key sorting, no HTML
escaping, as jinja2's own does), `raise_exception` and `strftime_now`, in a sandbox.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from toolkit.core.tool_prompt import renders_tools, text_of


def _tojson(
    value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(
        value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise(message: str) -> None:
    raise ValueError(message)


@lru_cache(maxsize=32)
def compile_template(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise
    environment.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    return environment.from_string(source)


def render_chat(
    source: str,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    kwargs: dict[str, Any] | None = None,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """The prompt for `messages` (text-part arrays joined, as engines do for text models)."""
    flat = [
        {**m, "content": text_of(m["content"])} if isinstance(m.get("content"), list) else m
        for m in messages
    ]
    return compile_template(source).render(
        **(kwargs or {}),
        messages=flat,
        tools=tools or None,
        add_generation_prompt=True,
        bos_token=bos_token,
        eos_token=eos_token,
    )


@lru_cache(maxsize=32)
def template_renders_tools(source: str | None) -> bool:
    """Whether the template writes a tool list into the prompt (Qwen3's does, SmolLM2's not)."""
    if not source:
        return False
    return renders_tools(lambda messages, tools: render_chat(source, messages, tools=tools))
