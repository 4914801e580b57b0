"""`GET /v1/models` and `GET /v1/models/{id}`: every served name, and its mode aliases."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve.protocol import error_response
from toolkit.core.modes import MODES

if TYPE_CHECKING:
    from serve.gateway import Gateway


def model_cards(gateway: Gateway) -> list[dict[str, Any]]:
    """One card per name clients may send; an embeddings model has no mode aliases."""
    now = int(time.time())
    cards = []
    for name, route in gateway.routes.items():
        generates = route.engine is None or not route.engine.embeddings
        aliases = [f"{name}:{mode}" for mode in MODES] if generates else []
        # an extra field OpenAI clients ignore: eval caches key their answers by it
        extra = {}
        if route.identity is not None:
            extra = {"identity": route.identity.value, "identity_source": route.identity.source}
        for model_id in (name, *aliases):
            cards.append(
                {
                    "id": model_id,
                    "object": "model",
                    "created": now,
                    "owned_by": "tuneserve",
                    "root": name,
                    **extra,
                }
            )
    return cards


async def list_models(gateway: Gateway, request: Request) -> Response:
    if (denied := gateway._check_key(request)) is not None:
        return denied
    return JSONResponse({"object": "list", "data": model_cards(gateway)})


async def get_model(gateway: Gateway, request: Request) -> Response:
    if (denied := gateway._check_key(request)) is not None:
        return denied
    wanted = request.path_params["model_id"]
    for card in model_cards(gateway):
        if card["id"] == wanted:
            return JSONResponse(card)
    return error_response(404, f"model {wanted!r} is not served here", "model", "model_not_found")
