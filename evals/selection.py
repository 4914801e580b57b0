"""Guarded checkpoint choice: among the checkpoints whose guard change is non-inferior to the
base (the paired 95% interval above -margin), the best held-out score; and the chart of that
trade-off. Pure functions over an eval report of base + one model per checkpoint.

Chosen on the same items the final report then shows, so the chosen checkpoint's figures lean
optimistic by a little (the best of a few); the final eval re-asks the exported model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any


@dataclass
class Candidate:
    name: str
    step: int
    heldout: float
    guard_delta: float
    guard_ci: tuple[float, float]
    passes: bool


def candidates(
    report: dict[str, Any], steps: dict[str, int], heldout: str = "heldout", guard: str = "guard"
) -> list[Candidate]:
    """One candidate per model of `steps` (served name -> training step) in `report`."""
    scores = {(s["suite"], s["model"]): s["score"] for s in report["models"]}
    pairs = {(p["suite"], p["model"]): p for p in report["comparisons"]}
    found = []
    for name, step in sorted(steps.items(), key=lambda item: item[1]):
        pair = pairs[(guard, name)]
        found.append(
            Candidate(
                name,
                step,
                scores[(heldout, name)],
                pair["delta"],
                tuple(pair["delta_ci"]),  # type: ignore[arg-type]
                bool(pair["noninferior"]),
            )
        )
    return found


def choose(found: list[Candidate]) -> tuple[Candidate, str]:
    """The best held-out score among those that keep the guard (ties: the smaller guard loss,
    then the later step); when none keeps it, the one that lost least, and why."""
    passing = [c for c in found if c.passes]
    if passing:
        best = max(passing, key=lambda c: (c.heldout, c.guard_ci[0], c.step))
        return best, f"best heldout ({best.heldout:.3f}) of {len(passing)} keeping the guard"
    best = max(found, key=lambda c: (c.guard_ci[0], c.heldout, c.step))
    return best, "no checkpoint keeps the guard; kept the one that lost least"


def render_chart(found: list[Candidate], chosen: Candidate, margin: float) -> bytes:
    """Held-out score (x) against guard change vs the base with its 95% interval (y), one
    point per checkpoint; below -margin a checkpoint fails the guard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    axis.axhspan(-1, -margin, color="tab:red", alpha=0.08, label=f"guard lost (< -{margin})")
    axis.axhline(0, color="grey", linewidth=0.8)
    for index, c in enumerate(found):
        lower, upper = c.guard_delta - c.guard_ci[0], c.guard_ci[1] - c.guard_delta
        color = "tab:green" if c.passes else "tab:red"
        axis.errorbar(c.heldout, c.guard_delta, yerr=[[lower], [upper]], fmt="o", color=color)
        # stacked labels: checkpoints often share a score
        axis.annotate(
            f"step {c.step}",
            (c.heldout, c.guard_delta),
            xytext=(8, 4 - 11 * index),
            textcoords="offset points",
        )
    axis.scatter(
        [chosen.heldout],
        [chosen.guard_delta],
        s=220,
        facecolors="none",
        edgecolors="k",
        label="chosen",
    )
    low = min([c.guard_ci[0] for c in found] + [-margin]) - 0.03
    high = max([c.guard_ci[1] for c in found] + [0.0]) + 0.03
    axis.set_ylim(low, high)
    axis.set_xlabel("heldout score")
    axis.set_ylabel("guard change vs base (95% CI)")
    axis.legend(loc="lower left", fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
