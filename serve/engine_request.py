"""How a client's completion request becomes its engine's: the route its `model` names, the
mode's sampling defaults under what the client set, the thinking switch, tools, and the chat
template where the gateway renders it (llama.cpp)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from serve.engines.llamacpp import chat_to_completion
from serve.legacy_completions import LegacyShape
from serve.model_route import ModelRoute
from serve.protocol import (
    GatewayError,
    check_engine_takes,
    legacy_shape,
    not_served,
    validate_request,
)
from serve.tools import completion_grammar, read_tool_plan, shape_for_engine
from toolkit.core.modes import Mode, apply_defaults, resolve_mode, split_alias


@dataclass
class EngineRequest:
    """A client's request as its engine gets it, and what the answer's way back needs."""

    route: ModelRoute
    path: str
    body: dict
    mode: Mode
    headers: dict[str, str]
    chat: bool
    rendered: bool = False
    in_reasoning: bool = False
    thinking_closed: bool = False
    upstream: str | None = None  # the replica picked for this request (else route.upstream)
    upstream_key: str | None = None  # that replica's own engine key (else route.upstream_key)
    payload: bytes = b""  # the body as sent to the engine, encoded once in engine_request
    parse_tools: bool = False  # the gateway turns `<tool_call>` text into tool_calls
    legacy: LegacyShape | None = None  # completions reshaped as OpenAI's (llama-server)


def engine_request(routes: dict[str, ModelRoute], body: dict, chat: bool) -> EngineRequest:
    """What the engine gets for a client's completion request, or GatewayError (4xx) saying
    what is wrong with it."""
    model = body.get("model")
    if not isinstance(model, str):
        raise GatewayError(400, "'model' must be a string naming a served model", "model")
    name, alias_mode = split_alias(model)
    route = routes.get(name) or routes.get(model)
    if route is None:
        raise not_served(model, routes)
    if route.name == model:
        alias_mode = None
    validate_request(body, chat)
    check_engine_takes(body, route.name, route.engine)
    legacy = legacy_shape(body, route.engine) if not chat else None
    if legacy is not None and legacy.echo is not None:
        body = {key: value for key, value in body.items() if key != "echo"}  # echoed here
    plan = read_tool_plan(body) if chat else None
    mode = resolve_mode(body, alias_mode, route.server_mode)
    body, sent = apply_defaults(body, mode)
    body["model"] = route.name
    for key, value in route.extra_sampling.items():
        body.setdefault(key, value)
    body.update(route.extra_body)
    headers = {"x-tuneserve-mode": mode, "x-tuneserve-sampling": sent.header()}
    prepared = EngineRequest(
        route, "/v1/chat/completions" if chat else "/v1/completions", body, mode, headers, chat
    )
    prepared.legacy = legacy
    if chat and route.knows_thinking:
        kwargs = dict(body.get("chat_template_kwargs") or {})
        kwargs.setdefault("enable_thinking", mode == "thinking")
        body["chat_template_kwargs"] = kwargs
        # the template closes an empty think block: nothing generated is reasoning
        prepared.thinking_closed = kwargs["enable_thinking"] is False
    render_tools = False
    if chat and route.engine is not None:
        body, render_tools = shape_for_engine(body, plan, route.engine)
        prepared.body = body
        prepared.parse_tools = render_tools and plan is not None and plan.choice != "none"
    if chat and (route.renders_chat or render_tools):
        try:
            prompt = route.engine.render(body)  # type: ignore[union-attr]
        except Exception as exc:  # a template error is the request's fault
            raise GatewayError(
                400, f"the chat template rejected the messages: {exc}", "messages"
            ) from None
        prepared.body = chat_to_completion(body, prompt)
        prepared.path, prepared.rendered = "/v1/completions", True
        prepared.in_reasoning = prompt.rstrip().endswith("<think>")
        prepared.thinking_closed = prompt.rstrip().endswith("</think>")
        thinking = "open" if prepared.in_reasoning else "optional"
        if prepared.thinking_closed or not route.knows_thinking:
            thinking = "no"
        grammar = completion_grammar(plan, body, thinking)
        if grammar is not None:
            prepared.body["grammar"] = grammar
    try:
        # Strict UTF-8 out as well as in: a lone surrogate sent escaped ("\ud800") decodes
        # to a str that is not Unicode text, and engines choke on it in their tokenizer.
        prepared.payload = json.dumps(prepared.body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise GatewayError(
            400, "request holds a lone UTF-16 surrogate (\\ud800-\\udfff), not text"
        ) from None
    return prepared
