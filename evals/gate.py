"""The regression gate: which suites dropped more than a threshold below their baseline."""

from __future__ import annotations

from typing import Any


def regressions(
    report: dict[str, Any], threshold: float, baseline: dict[str, Any] | None = None
) -> list[str]:
    """One line per (suite, model) whose score fell more than `threshold` below its baseline:
    the first model of the same report, or the same model in a saved baseline report."""
    found = []
    if baseline is None:
        for pair in report["comparisons"]:
            if pair["delta"] < -threshold:
                found.append(
                    f"{pair['suite']}: {pair['model']} is {-pair['delta']:.3f} below {pair['baseline']} "
                    f"(allowed {threshold})"
                )
        return found
    before = {(s["suite"], s["model"]): s["score"] for s in baseline["models"]}
    for stats in report["models"]:
        key = (stats["suite"], stats["model"])
        if key in before and stats["score"] < before[key] - threshold:
            found.append(
                f"{stats['suite']}: {stats['model']} scored {stats['score']:.3f}, baseline {before[key]:.3f} "
                f"(allowed drop {threshold})"
            )
    return found
