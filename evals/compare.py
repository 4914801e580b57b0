"""Paired comparison of models over the same items: scores with 95% bootstrap intervals, paired
significance (exact McNemar for pass/fail scores, paired bootstrap otherwise), wins/losses/ties,
latency p50/p95 and output tokens/s; non-inferiority against a margin, and whether a suite is
large enough to show a change at all. Pure functions over answers and scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 2000
ALPHA = 0.05


def bootstrap_ci(values: list[float], seed: int = 0) -> tuple[float, float]:
    if not values:
        return (float("nan"), float("nan"))
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(RESAMPLES, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def smallest_p(n: int) -> float:
    """The smallest two-sided p-value n paired items can give: every one of them changed the
    same way (exact sign test; McNemar and the paired bootstrap cannot do better)."""
    return min(1.0, 2 * 0.5**n) if n else 1.0


def paired_bootstrap_p(deltas: list[float], seed: int = 0) -> float:
    data = np.asarray(deltas, dtype=float)
    if len(data) == 0 or np.all(data == 0):
        return 1.0
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(RESAMPLES, len(data)))].mean(axis=1)
    below = float((means <= 0).mean())
    above = float((means >= 0).mean())
    return min(1.0, 2 * min(below, above))


@dataclass
class ModelSuiteStats:
    model: str
    suite: str
    n: int
    score: float
    ci: tuple[float, float]
    errors: int
    latency_p50: float
    latency_p95: float
    tokens_per_second: float
    extra: dict[str, float] = field(default_factory=dict)
    item_scores: dict[str, float] = field(default_factory=dict)  # pairs a later report with this
    cached: int = 0  # answers reused from the response cache, not asked in this run


@dataclass
class PairedStats:
    suite: str
    baseline: str
    model: str
    delta: float
    delta_ci: tuple[float, float]
    p_value: float
    test: str
    wins: int
    losses: int
    ties: int
    margin: float | None = None
    noninferior: bool | None = None  # the CI's lower bound is above -margin
    smallest_p: float = 0.0
    too_small: bool = False  # even if every item changed, p would stay above ALPHA


def model_stats(
    model: str,
    suite: str,
    scores: list[float],
    answers: list[Any],
    extra: dict[str, list[float]],
    items: list[str] | None = None,
) -> ModelSuiteStats:
    latencies = [a.latency_s for a in answers if a.error is None]
    tokens = sum(a.completion_tokens for a in answers if a.error is None)
    return ModelSuiteStats(
        model=model,
        suite=suite,
        n=len(scores),
        score=float(np.mean(scores)) if scores else float("nan"),
        ci=bootstrap_ci(scores),
        errors=sum(a.error is not None for a in answers),
        latency_p50=float(np.percentile(latencies, 50)) if latencies else float("nan"),
        latency_p95=float(np.percentile(latencies, 95)) if latencies else float("nan"),
        tokens_per_second=tokens / sum(latencies) if latencies and sum(latencies) > 0 else 0.0,
        extra={name: float(np.mean(values)) for name, values in extra.items() if values},
        item_scores=dict(zip(items, scores, strict=True)) if items else {},
        cached=sum(bool(getattr(a, "cached", False)) for a in answers),
    )


def noninferior(delta_ci: tuple[float, float], margin: float) -> bool:
    """Non-inferiority: the paired 95% interval of (model - baseline) stays above -margin."""
    return bool(delta_ci[0] > -margin)


def paired_stats(
    suite: str,
    baseline: str,
    model: str,
    base_scores: list[float],
    scores: list[float],
    margin: float | None = None,
) -> PairedStats:
    deltas = [b - a for a, b in zip(base_scores, scores, strict=True)]
    wins = sum(d > 0 for d in deltas)
    losses = sum(d < 0 for d in deltas)
    binary = all(s in (0.0, 1.0) for s in base_scores + scores)
    p = mcnemar_exact(wins, losses) if binary else paired_bootstrap_p(deltas)
    # An interval from one value (every item tied) is that value, not NaN.
    interval = bootstrap_ci(deltas, seed=1) if deltas else (0.0, 0.0)
    floor = smallest_p(len(deltas))
    return PairedStats(
        suite=suite,
        baseline=baseline,
        model=model,
        delta=float(np.mean(deltas)) if deltas else 0.0,
        delta_ci=interval,
        p_value=p,
        test="mcnemar-exact" if binary else "paired-bootstrap",
        wins=wins,
        losses=losses,
        ties=len(deltas) - wins - losses,
        margin=margin,
        noninferior=None if margin is None else noninferior(interval, margin),
        smallest_p=floor,
        too_small=floor > ALPHA,
    )
