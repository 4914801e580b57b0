"""Paired comparison of models over the same items: scores with 95% bootstrap intervals, paired
significance (exact McNemar for pass/fail scores, paired bootstrap otherwise), wins/losses/ties,
latency p50/p95 and output tokens/s. Pure functions over answers and scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 2000


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


def model_stats(
    model: str, suite: str, scores: list[float], answers: list[Any], extra: dict[str, list[float]]
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
        cached=sum(bool(getattr(a, "cached", False)) for a in answers),
    )


def paired_stats(
    suite: str, baseline: str, model: str, base_scores: list[float], scores: list[float]
) -> PairedStats:
    deltas = [b - a for a, b in zip(base_scores, scores, strict=True)]
    wins = sum(d > 0 for d in deltas)
    losses = sum(d < 0 for d in deltas)
    binary = all(s in (0.0, 1.0) for s in base_scores + scores)
    p = mcnemar_exact(wins, losses) if binary else paired_bootstrap_p(deltas)
    return PairedStats(
        suite=suite,
        baseline=baseline,
        model=model,
        delta=float(np.mean(deltas)) if deltas else 0.0,
        delta_ci=bootstrap_ci(deltas, seed=1),
        p_value=p,
        test="mcnemar-exact" if binary else "paired-bootstrap",
        wins=wins,
        losses=losses,
        ties=len(deltas) - wins - losses,
    )
