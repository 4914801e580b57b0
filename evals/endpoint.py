"""What the endpoint under test serves, as far as the response cache must know.

An answer is reused only for the same request to the same endpoint and the same served model.
A tuneserve gateway lists each model's `identity` (its files' hash) in `/v1/models`; another
OpenAI-compatible endpoint lists names only, and then the model's name at that URL is all the
cache can go by (the report says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServedModel:
    name: str
    identity: str | None  # from /v1/models, when the endpoint gives one
    source: str | None  # how the endpoint made it: "manifest" (file hashes) or "stat"

    @property
    def keyed_by(self) -> str:
        """How the cache tells this model's answers apart, for the report."""
        if self.identity is None:
            return "model name at the endpoint URL (the endpoint gives no identity)"
        return f"endpoint URL and served identity {self.identity[:19]}... ({self.source})"

    def cache_scope(self, endpoint: str, version: str = "") -> str:
        """What goes into every cache key of this model's requests besides the request."""
        return f"{endpoint}|{self.identity or ''}|{version}"


def fetch_served(
    base_url: str, api_key: str | None, models: list[str], timeout: float
) -> list[ServedModel]:
    """One ServedModel per name in `models`, from the endpoint's `/v1/models` (none found, or
    no such listing: names only)."""
    listed = _listing(base_url, api_key, timeout)
    served = []
    for name in models:
        entry = listed.get(name) or {}
        identity = entry.get("identity")
        source = entry.get("identity_source")
        if not isinstance(identity, str) or not identity:
            identity, source = None, None
        served.append(ServedModel(name, identity, source if isinstance(source, str) else None))
    return served


def _listing(base_url: str, api_key: str | None, timeout: float) -> dict[str, dict[str, Any]]:
    import httpx
    import openai

    with openai.OpenAI(
        base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=2
    ) as client:
        try:
            response = client.get("/models", cast_to=httpx.Response)
            data = response.json().get("data", [])
        except (openai.APIError, ValueError, AttributeError):
            return {}
    return {entry["id"]: entry for entry in data if isinstance(entry, dict) and "id" in entry}
