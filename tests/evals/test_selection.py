"""Guarded checkpoint choice over a report of base + one model per checkpoint (pure)."""

from __future__ import annotations

from evals.selection import candidates, choose, render_chart


def report(rows: dict[str, tuple[float, float, tuple[float, float], bool]]) -> dict:
    """name -> (heldout score, guard delta, guard CI, non-inferior)."""
    models = [{"suite": "heldout", "model": name, "score": row[0]} for name, row in rows.items()]
    comparisons = [
        {
            "suite": "guard",
            "model": name,
            "delta": row[1],
            "delta_ci": list(row[2]),
            "noninferior": row[3],
        }
        for name, row in rows.items()
    ]
    return {"models": models, "comparisons": comparisons}


STEPS = {"step-10": 10, "step-20": 20, "step-30": 30}


def test_the_best_heldout_among_checkpoints_that_keep_the_guard():
    data = report(
        {
            "step-10": (0.40, -0.01, (-0.03, 0.01), True),
            "step-20": (0.60, -0.02, (-0.045, 0.0), True),
            "step-30": (0.70, -0.06, (-0.10, -0.02), False),  # best heldout, lost the guard
        }
    )
    found = candidates(data, STEPS)
    assert [c.step for c in found] == [10, 20, 30]
    chosen, why = choose(found)
    assert chosen.name == "step-20" and "of 2 keeping the guard" in why
    png = render_chart(found, chosen, 0.05)
    assert png[:4] == b"\x89PNG" and len(png) > 5000


def test_when_none_keeps_the_guard_the_one_that_lost_least():
    data = report(
        {
            "step-10": (0.30, -0.05, (-0.08, -0.02), False),
            "step-20": (0.60, -0.08, (-0.12, -0.04), False),
            "step-30": (0.70, -0.10, (-0.15, -0.05), False),
        }
    )
    chosen, why = choose(candidates(data, STEPS))
    assert chosen.name == "step-10" and "no checkpoint keeps the guard" in why


def test_ties_on_heldout_go_to_the_smaller_guard_loss():
    data = report(
        {
            "step-10": (0.60, -0.03, (-0.045, 0.0), True),
            "step-20": (0.60, 0.0, (-0.01, 0.01), True),
            "step-30": (0.50, 0.0, (0.0, 0.0), True),
        }
    )
    assert choose(candidates(data, STEPS))[0].name == "step-20"
