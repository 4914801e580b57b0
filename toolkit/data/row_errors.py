"""The error a row that cannot be used raises, and how its values are quoted in it."""

from __future__ import annotations

from typing import Any


class RowError(ValueError):
    """A row that cannot be used, with the reason."""


def shown(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters: a row's value can be megabytes long, and the
    error that quotes it must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
