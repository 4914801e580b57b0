"""The regression gate: non-inferiority of every (suite, model) against its baseline.

A model regresses on a suite when the paired 95% interval of its change reaches -threshold
or below: a point delta would flip on the luck of a few items, the interval says what the
items can support (SPEC §8).
"""

from __future__ import annotations

from typing import Any

from evals.compare import paired_stats

DEFAULT_MARGIN = 0.05  # the guard's non-inferiority margin when a caller names none


def regressions(
    report: dict[str, Any], threshold: float, baseline: dict[str, Any] | None = None
) -> list[str]:
    """One line per (suite, model) whose paired 95% interval of change reaches -threshold:
    against the first model of the same report, or the same model in a saved baseline report
    (paired item by item where both reports hold item scores, else by score alone)."""
    if baseline is None:
        return [
            _line(
                pair["suite"],
                pair["model"],
                pair["baseline"],
                pair["delta"],
                pair["delta_ci"],
                threshold,
            )
            for pair in report["comparisons"]
            if not pair["delta_ci"][0] > -threshold
        ]
    found = []
    before = {(s["suite"], s["model"]): s for s in baseline["models"]}
    for stats in report["models"]:
        saved = before.get((stats["suite"], stats["model"]))
        if saved is None:
            continue
        now, then = stats.get("item_scores"), saved.get("item_scores")
        if now and then and set(now) & set(then):
            common = [item for item in now if item in then]
            pair = paired_stats(
                stats["suite"],
                "baseline",
                stats["model"],
                [then[i] for i in common],
                [now[i] for i in common],
            )
            if not pair.delta_ci[0] > -threshold:
                found.append(
                    _line(
                        stats["suite"],
                        stats["model"],
                        "its baseline",
                        pair.delta,
                        pair.delta_ci,
                        threshold,
                    )
                )
        elif stats["score"] < saved["score"] - threshold:  # an older report: no items to pair
            found.append(
                f"{stats['suite']}: {stats['model']} scored {stats['score']:.3f}, baseline "
                f"{saved['score']:.3f} (allowed drop {threshold}; the baseline report has no "
                "item scores to pair)"
            )
    return found


def _line(
    suite: str, model: str, baseline: str, delta: float, interval: Any, threshold: float
) -> str:
    return (
        f"{suite}: {model} vs {baseline} changed {delta:+.3f}, 95% CI "
        f"[{interval[0]:+.3f}, {interval[1]:+.3f}] reaches -{threshold} (not non-inferior)"
    )
