"""Hold out an eval split, then mix sources by `data.mix` shares or per-source `weight` (pure).

`mix` follows the seed recipe: every source keeps the share it is given (reasoning 0.75 /
chat 0.25) by taking as many rows as the scarcest source allows. `weight` is a repeat factor
(2 = each row twice, 0.5 = half the rows), as in LLaMA-Factory's interleave weights.
"""

from __future__ import annotations

import random
from typing import Any

Example = dict[str, Any]


def hold_out(
    rows: list[Example], fraction: float, rng: random.Random
) -> tuple[list[Example], list[Example]]:
    """Shuffle and split one source; at least one row goes each way when both are possible."""
    shuffled = rows[:]
    rng.shuffle(shuffled)
    if fraction <= 0 or len(shuffled) < 2:
        return shuffled, []
    count = min(max(1, round(len(shuffled) * fraction)), len(shuffled) - 1)
    return shuffled[count:], shuffled[:count]


def mix_counts(sizes: dict[str, int], shares: dict[str, float]) -> dict[str, int]:
    """Rows to take from each source so their proportions equal `shares`."""
    total = min(sizes[name] / share for name, share in shares.items() if share > 0)
    return {name: min(sizes[name], round(total * share)) for name, share in shares.items()}


def weighted(rows: list[Example], weight: float, rng: random.Random) -> list[Example]:
    whole, fraction = divmod(weight, 1.0)
    taken = rows * int(whole)
    return taken + rng.sample(rows, round(len(rows) * fraction))


def mix_sources(
    sources: dict[str, list[Example]],
    *,
    mix: dict[str, float] | None,
    weights: dict[str, float | None],
    seed: int,
) -> list[Example]:
    rng = random.Random(seed)
    if mix:
        counts = mix_counts({name: len(rows) for name, rows in sources.items()}, mix)
        mixed = [
            row for name, rows in sources.items() for row in rng.sample(rows, counts.get(name, 0))
        ]
    else:
        mixed = [
            row
            for name, rows in sources.items()
            for row in weighted(rows, weights.get(name) or 1.0, rng)
        ]
    rng.shuffle(mixed)
    return mixed
