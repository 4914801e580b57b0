"""Counters the reliability suite prints at the end of `make test` (inputs tried, faults survived...)."""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()


def record(what: str, n: int = 1) -> None:
    COUNTS[what] += n
