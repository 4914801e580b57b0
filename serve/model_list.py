"""`GET /v1/models` and `GET /v1/models/{id}`: every served name, and its mode aliases."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

from serve.model_route import ModelRoute
from serve.protocol import error_response
from toolkit.core.modes import MODES


def model_cards(routes: Mapping[str, ModelRoute]) -> list[dict[str, Any]]:
    """One card per name clients may send; an embeddings model has no mode aliases."""
    now = int(time.time())
    cards = []
    for name, route in routes.items():
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


def list_models(routes: Mapping[str, ModelRoute]) -> Response:
    return JSONResponse({"object": "list", "data": model_cards(routes)})


def get_model(routes: Mapping[str, ModelRoute], wanted: str) -> Response:
    for card in model_cards(routes):
        if card["id"] == wanted:
            return JSONResponse(card)
    return error_response(404, f"model {wanted!r} is not served here", "model", "model_not_found")
