"""The client compatibility matrix's shared parts: where the gateway under test is, and what
the tests ask (tests/serve/test_matrix_openai.py, test_matrix_clients.py).

Targets: `llama.cpp` is started by the session (tests/serve/conftest.py: the native
llama-server in CI) on the tool model taught in the session (tests/serve/tool_model.py).
`vLLM` is a gateway already running on a GPU machine (benchmarks/gpu/tools_matrix.sh starts
it), named by TUNESERVE_MATRIX_GATEWAY (base URL, .../v1), TUNESERVE_MATRIX_KEY,
TUNESERVE_MATRIX_MODEL (default `tools`), TUNESERVE_MATRIX_EMBED (an embeddings model,
optional) and TUNESERVE_MATRIX_CORS (an origin it was started with, optional); its tests are
`gpu`. `make test` prints the table at the end (client x feature x engine).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from tests.serve.tool_model import weather_question

# Never in the training data. Not Lisbon: the taught model writes Lagos (a training city) for it.
CITY, OTHER_CITY = "Madrid", "Boston"
ORIGIN = "http://app.example"
GREEDY = {"temperature": 0, "max_tokens": 64}


@dataclass
class Target:
    engine: str
    base_url: str
    key: str
    model: str = "tools"
    embed_model: str | None = None
    cors_origin: str | None = None


def remote_target() -> Target | None:
    url = os.environ.get("TUNESERVE_MATRIX_GATEWAY")
    if not url:
        return None
    return Target(
        "vLLM",
        url,
        os.environ.get("TUNESERVE_MATRIX_KEY", ""),
        os.environ.get("TUNESERVE_MATRIX_MODEL", "tools"),
        os.environ.get("TUNESERVE_MATRIX_EMBED") or None,
        os.environ.get("TUNESERVE_MATRIX_CORS") or None,
    )


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def calls_of(message) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def continued(city: str) -> list[dict]:
    """A conversation after the model asked for the weather and the tool answered."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }
    return [
        *ask(weather_question(city)),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp_c": 21})},
    ]


class CityCard(BaseModel):
    city: str
    country: str


def needs(module: str, target: Target) -> None:
    """Every client is installed here (the `dev` extra); a GPU machine may carry fewer."""
    if target.engine != "llama.cpp" and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed on this machine")


def asked_for(calls: list[tuple[str, dict]], *names: str) -> bool:
    """Whether `calls` are exactly one call to each of `names`, in order, each with a city.

    The taught model's own accuracy (the city copied right) is checked once, in
    test_matrix_openai.py; elsewhere the matrix checks what each client makes of the calls.
    """
    return [name for name, _ in calls] == list(names) and all(
        isinstance(args.get("city"), str) and args["city"] for _, args in calls
    )
