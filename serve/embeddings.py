"""`POST /v1/embeddings`: relayed to a model served with `--embeddings NAME=PATH`.

Engines run a model for embeddings or for generation, not both (llama-server's
`--embeddings`, vLLM's pooling runner), so an embeddings model is a served model of its own;
asking any other model for embeddings is a 404 that names the flag.
"""

from __future__ import annotations

from collections.abc import Mapping

from serve.model_route import ModelRoute
from serve.protocol import GatewayError, not_served


def _valid_input(value: object) -> bool:
    def ids(item: object) -> bool:
        return (
            isinstance(item, list)
            and bool(item)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in item)
        )

    if isinstance(value, str):
        return True
    return (
        isinstance(value, list)
        and bool(value)
        and (
            all(isinstance(item, str) for item in value) or ids(value) or all(ids(i) for i in value)
        )
    )


def embeddings_route(routes: Mapping[str, ModelRoute], body: dict) -> ModelRoute:
    """The route an embeddings request goes to, or GatewayError naming what is wrong with it."""
    model = body.get("model")
    route = routes.get(model) if isinstance(model, str) else None
    if route is None:
        raise not_served(model, routes)
    if route.engine is None or not route.engine.embeddings:
        raise GatewayError(
            404,
            f"model {model!r} is not served for embeddings; serve a model for them with "
            "`tuneserve serve ... --embeddings NAME=PATH`",
            "model",
            "model_not_found",
        )
    if not _valid_input(body.get("input")):
        raise GatewayError(
            400, "'input' must be a string, an array of strings or of token ids", "input"
        )
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise GatewayError(400, "'encoding_format' must be float or base64", "encoding_format")
    return route
