"""An engine's error body in the one shape the OpenAI SDKs read.

llama-server answers `{"error": {"code": 400, "type": "exceed_context_size_error", ...}}`,
vLLM `{"error": {"code": 400, "type": "BadRequestError", "param": null}}`, llama-cpp-python
already OpenAI's: every one becomes `{"message", "type", "param", "code"}` with a string or
null `code`, and a prompt too long for the context is `context_length_exceeded` on `messages`
whichever engine said it.
"""

from __future__ import annotations

import re
from typing import Any

_OVERFLOW = re.compile(
    r"maximum context length|exceeds? the available context size|exceed context window"
    r"|context (?:size|length) (?:has been )?exceeded",
    re.IGNORECASE,
)
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    499: "client_closed_request",
    503: "service_unavailable",
}


def status_type(status: int) -> str:
    return STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """The engine's `error` object as OpenAI's four fields."""
    message = str(error.get("message") or error.get("detail") or "engine error")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    if error.get("type") == "exceed_context_size_error" or _OVERFLOW.search(message):
        code, param = "context_length_exceeded", param or "messages"
    return {"message": message, "type": status_type(status), "param": param, "code": code}
