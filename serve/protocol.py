"""The OpenAI wire contract at the gateway's edge: request checks and error JSON.

Checking here first turns what llama-cpp-python would answer with a 500 into a clear 400.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from serve.engine_errors import openai_error, status_type
from serve.legacy_completions import LegacyShape
from serve.upstream import UpstreamError, UpstreamTimeout, UpstreamTooLarge
from toolkit.core.modes import SAMPLING_FIELDS

if TYPE_CHECKING:
    from serve.engines.base import Engine

MAX_BODY_BYTES = 8 * 1024 * 1024
_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


class GatewayError(Exception):
    """Becomes an OpenAI-shaped error response. `unsent`: the request never reached an
    engine, so another replica may take it (a sent one could be generating already)."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        *,
        unsent: bool = False,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.unsent = unsent
        self.headers: dict[str, str] | None = None  # e.g. connection: close


def engine_error(name: str, exc: UpstreamError) -> GatewayError:
    """What the client gets when the engine behind model `name` failed it."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(
            504,
            f"the engine for {name!r} did not answer: {exc} "
            "(wedged or overloaded; `tuneserve serve --engine-timeout` sets the limit)",
            code="engine_timeout",
        )
    if isinstance(exc, UpstreamTooLarge):
        return GatewayError(502, f"the engine for {name!r}: {exc}", code="engine_error")
    cause = exc.__cause__ or exc
    return GatewayError(
        503,
        f"the engine for {name!r} is unreachable ({type(cause).__name__}); it is being restarted",
        unsent=not exc.sent,
    )


def not_served(model: object, served: Iterable[str]) -> GatewayError:
    """404 for a `model` no route answers to, listing those that do."""
    names = ", ".join(sorted(served))
    return GatewayError(
        404, f"model {model!r} is not served here (served: {names})", "model", "model_not_found"
    )


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """`{"error": {"message", "type", "param", "code"}}` with the HTTP status, as OpenAI does."""
    error = {"message": message, "type": status_type(status), "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


# Numeric fields: (lowest, highest, integer). Bounds are the OpenAI API's, widened where an
# engine accepts more (top_k -1 = off); values past them reach an engine as a 500 or worse.
_NUMBERS: dict[str, tuple[float | None, float | None, bool]] = {
    "temperature": (0, 2, False),
    "top_p": (0, 1, False),
    "min_p": (0, 1, False),
    "top_k": (-1, None, True),
    "max_tokens": (1, 2**31 - 1, True),
    "max_completion_tokens": (1, 2**31 - 1, True),
    "n": (1, 128, True),
    "seed": (None, None, True),
    "presence_penalty": (-2, 2, False),
    "frequency_penalty": (-2, 2, False),
    "repeat_penalty": (0, None, False),
    "top_logprobs": (0, 20, True),
}
assert set(SAMPLING_FIELDS) <= set(_NUMBERS)  # every mode default is checked when sent


def validate_request(body: dict, chat: bool) -> None:
    """Raise GatewayError(400) for what an engine would reject or choke on."""
    if chat:
        _check_messages(body.get("messages"))
        if not isinstance(body.get("tools", []), list | None):
            raise GatewayError(400, "'tools' must be an array", "tools")
    else:
        _check_prompt(body.get("prompt"))
    for key, bounds in _NUMBERS.items():
        _check_number(key, body.get(key), *bounds)
    stop = body.get("stop")
    if not isinstance(stop, str | None) and not (
        isinstance(stop, list) and all(isinstance(item, str) for item in stop)
    ):
        raise GatewayError(400, "'stop' must be a string or an array of strings", "stop")
    logprobs = body.get("logprobs")
    if chat and not isinstance(logprobs, bool | None):
        raise GatewayError(400, "'logprobs' must be a boolean", "logprobs")
    if not chat:
        _check_number("logprobs", logprobs, 0, 20, True)
    if not isinstance(body.get("stream"), bool | None):
        raise GatewayError(400, "'stream' must be a boolean", "stream")
    if not isinstance(body.get("chat_template", ""), str):
        raise GatewayError(400, "'chat_template' must be a string", "chat_template")
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise GatewayError(400, "'chat_template_kwargs' must be an object", "chat_template_kwargs")
    if not isinstance((kwargs or {}).get("enable_thinking", False), bool):
        raise GatewayError(
            400, "'chat_template_kwargs.enable_thinking' must be a boolean", "chat_template_kwargs"
        )
    logit_bias = body.get("logit_bias")
    if logit_bias is not None and not (
        isinstance(logit_bias, dict)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and -100 <= v <= 100
            for v in logit_bias.values()
        )
    ):  # llama-server ignores a malformed one; llama-cpp-python answers 500
        raise GatewayError(
            400, "'logit_bias' must be an object of token id -> number in -100 .. 100", "logit_bias"
        )
    if not isinstance(body.get("response_format", {}), dict | None):
        raise GatewayError(400, "'response_format' must be an object", "response_format")


def legacy_shape(body: dict, engine: Engine | None) -> LegacyShape | None:
    """How the gateway reshapes a completions answer where the engine does not (None where it
    does): llama-server ignores `echo` and writes chat-shaped logprobs, llama-cpp-python
    ignores `echo` when streaming. GatewayError(400) for what the gateway cannot do either."""
    if engine is None:
        return None
    if engine.legacy_completions and not (body.get("echo") and body.get("stream")):
        return None
    if engine.legacy_completions and engine.kind != "llamacpp":
        return None
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    text = prompt if isinstance(prompt, str) else None
    if body.get("echo"):
        if text is None:
            raise GatewayError(400, "'echo' needs one text prompt on this engine", "echo")
        if body.get("logprobs"):
            raise GatewayError(
                400,
                "'echo' with 'logprobs' needs the prompt's log-probabilities, "
                "which llama.cpp does not give",
                "echo",
            )
    return LegacyShape(text if body.get("echo") else None, len(text or ""))


_TEXT_PARTS = {"text", "input_text", "output_text", "refusal"}


def check_engine_takes(body: dict, name: str, engine: Engine | None) -> None:
    """400 for what this model cannot take: generation from an embeddings model, and on
    llama.cpp (served here without a vision projector) any content part but text."""
    if engine is None:
        return
    if engine.embeddings:
        raise GatewayError(
            400, f"model {name!r} is served for embeddings only: use /v1/embeddings", "model"
        )
    if engine.kind != "llamacpp" or any(
        arg.startswith(("--mmproj", "-mm")) for arg in engine.extra_args
    ):
        return  # vLLM, or llama.cpp given a vision projector, knows what its model takes
    for index, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part["type"] not in _TEXT_PARTS:
                raise GatewayError(
                    400,
                    f"model {name!r} takes text only; messages[{index}] has a "
                    f"{str(part['type'])[:40]!r} part",
                    "messages",
                    "unsupported_content",
                )


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "'messages' must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in _ROLES:  # a list or object is unhashable
            roles = ", ".join(sorted(_ROLES))
            raise GatewayError(400, f"messages[{index}].role must be one of {roles}", "messages")
        content = message.get("content")
        parts_ok = isinstance(content, list) and all(
            isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
        )
        if not (isinstance(content, str | None) or parts_ok):
            raise GatewayError(
                400,
                f"messages[{index}].content must be text or an array of {{type, ...}} parts",
                "messages",
            )


def _check_prompt(prompt: object) -> None:
    def token_ids(value: object) -> bool:
        return isinstance(value, list) and all(_is_int(item) for item in value)

    if isinstance(prompt, str):
        return
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(item, str) or _is_int(item) or token_ids(item) for item in prompt)
    ):
        return
    raise GatewayError(
        400, "'prompt' must be a string, an array of strings or of token ids", "prompt"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(
    key: str, value: object, low: float | None, high: float | None, integer: bool
) -> None:
    if value is None:
        return
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or not math.isfinite(value):  # type: ignore[arg-type]
        raise GatewayError(400, f"'{key}' must be a finite number", key)
    if integer and not float(value).is_integer():  # type: ignore[arg-type]
        raise GatewayError(400, f"'{key}' must be an integer", key)
    if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
        span = f"{low if low is not None else '-inf'} .. {high if high is not None else 'inf'}"
        raise GatewayError(400, f"'{key}' must be in {span}, got {str(value)[:30]}", key)


def upstream_error(status: int, content: bytes, headers: dict[str, str]) -> JSONResponse:
    """Engine errors keep their status; the body is made OpenAI-shaped when it is not."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict | str):
        found = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
    elif isinstance(data, dict) and isinstance(data.get("message"), str):  # older vLLM: flat
        found = data
    else:
        found = None
    if found is not None:
        error = openai_error(status, found)
        return JSONResponse({"error": error}, status_code=status, headers=headers)
    message = data.get("detail") if isinstance(data, dict) else None
    text = content.decode(errors="replace")[:500]
    return error_response(status, f"engine error: {message or text}", headers=headers)


def upstream_status(status: int, content: bytes) -> int:
    """llama-cpp-python answers a request it rejects with 500 "N validation errors": a 400."""
    if status == 500 and b"validation error" in content[:200]:
        return 400
    return status


def cors_app(app: Any, origins: Sequence[str]) -> Any:
    """`app` answering browser pages from `origins` (`*` for any): preflights, and the
    response headers a page may read (the mode and sampling the gateway sent)."""
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["x-tuneserve-mode", "x-tuneserve-sampling"],
        max_age=600,
    )
