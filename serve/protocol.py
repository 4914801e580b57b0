"""The OpenAI wire contract at the gateway's edge: request checks and error JSON.

Checking here first turns what llama-cpp-python would answer with a 500 into a clear 400.
"""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

from serve.modes import SAMPLING_FIELDS

MAX_BODY_BYTES = 8 * 1024 * 1024
_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    499: "client_closed_request",
    503: "service_unavailable",
}


class GatewayError(Exception):
    """Becomes an OpenAI-shaped error response."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """`{"error": {"message", "type", "param", "code"}}` with the HTTP status, as OpenAI does."""
    kind = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": message, "type": kind, "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def validate_request(body: dict, chat: bool) -> None:
    """Raise GatewayError(400) for what an engine would reject or choke on."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GatewayError(400, "'messages' must be a non-empty array", "messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                roles = ", ".join(sorted(_ROLES))
                raise GatewayError(
                    400, f"messages[{index}].role must be one of {roles}", "messages"
                )
            if not isinstance(message.get("content"), str | list | None):
                raise GatewayError(
                    400, f"messages[{index}].content must be text or parts", "messages"
                )
        if not isinstance(body.get("tools", []), list | None):
            raise GatewayError(400, "'tools' must be an array", "tools")
    elif not isinstance(body.get("prompt"), str | list):
        raise GatewayError(400, "'prompt' must be a string or an array", "prompt")
    for key in (*SAMPLING_FIELDS, "max_tokens", "repeat_penalty"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise GatewayError(400, f"'{key}' must be a number", key)
    if body.get("n") is not None and (
        isinstance(body["n"], bool) or not isinstance(body["n"], int)
    ):
        raise GatewayError(400, "'n' must be an integer", "n")
    if not isinstance(body.get("stop"), str | list | None):
        raise GatewayError(400, "'stop' must be a string or an array of strings", "stop")
    if not isinstance(body.get("stream", False), bool):
        raise GatewayError(400, "'stream' must be a boolean", "stream")
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise GatewayError(400, "'chat_template_kwargs' must be an object", "chat_template_kwargs")


def upstream_error(status: int, content: bytes, headers: dict[str, str]) -> JSONResponse:
    """Engine errors keep their status; the body is made OpenAI-shaped when it is not."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = {"type": _STATUS_TYPES.get(status, "server_error"), **data["error"]}
        if status == 400:  # an engine's 500 recognised as the request's fault
            error["type"] = "invalid_request_error"
        return JSONResponse({"error": error}, status_code=status, headers=headers)
    message = data.get("detail") if isinstance(data, dict) else None
    text = content.decode(errors="replace")[:500]
    return error_response(status, f"engine error: {message or text}", headers=headers)


def upstream_status(status: int, content: bytes) -> int:
    """llama-cpp-python answers a request it rejects with 500 "N validation errors": a 400."""
    if status == 500 and b"validation error" in content[:200]:
        return 400
    return status
