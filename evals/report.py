"""report.json, report.md and report.png (bars with 95% intervals), written atomically."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolkit.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text


def as_json(stats: list[Any], pairs: list[Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "models": [asdict(s) for s in stats],
        "comparisons": [asdict(p) for p in pairs],
    }


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Eval report", ""]
    meta = report["meta"]
    lines += [
        f"Endpoint `{meta['base_url']}`, models {', '.join(meta['models'])}, seed {meta['seed']}.",
        "",
    ]
    lines += [
        "| suite | model | n | score | 95% CI | errors | latency p50 / p95 s | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["models"]:
        extra = "".join(f", {k} {v:.3f}" for k, v in s["extra"].items())
        lines.append(
            f"| {s['suite']} | {s['model']} | {s['n']} | {s['score']:.3f}{extra} | "
            f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] | {s['errors']} | "
            f"{s['latency_p50']:.2f} / {s['latency_p95']:.2f} | {s['tokens_per_second']:.1f} |"
        )
    if report["comparisons"]:
        lines += [
            "",
            "| suite | change | delta | 95% CI | p | test | wins / losses / ties |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in report["comparisons"]:
            lines.append(
                f"| {p['suite']} | {p['baseline']} -> {p['model']} | {p['delta']:+.3f} | "
                f"[{p['delta_ci'][0]:+.3f}, {p['delta_ci'][1]:+.3f}] | {p['p_value']:.3g} | {p['test']} | "
                f"{p['wins']} / {p['losses']} / {p['ties']} |"
            )
    lines += _cache_lines(report)
    return "\n".join(lines) + "\n"


def _cache_lines(report: dict[str, Any]) -> list[str]:
    """Which answers were reused from the response cache, and what it keyed them by."""
    cache = report["meta"].get("cache")
    if not cache:
        return []
    reused = [s for s in report["models"] if s.get("cached")]
    where = f" (`{cache['file']}`)" if cache.get("file") else ""
    lines = [
        "",
        f"Answers from the cache{where}: {cache['answers_from_cache']} reused, "
        f"{cache['answers_asked']} asked in this run"
        + (
            ": " + ", ".join(f"{s['suite']}/{s['model']} {s['cached']} of {s['n']}" for s in reused)
            if reused
            else "."
        ),
    ]
    for model, keyed_by in cache.get("keyed_by", {}).items():
        lines.append(f"- {model}: cached by {keyed_by}")
    return lines


def render_png(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    suites = list(dict.fromkeys(s["suite"] for s in report["models"]))
    models = list(dict.fromkeys(s["model"] for s in report["models"]))
    by_key = {(s["suite"], s["model"]): s for s in report["models"]}
    width = 0.8 / max(len(models), 1)
    figure, axis = plt.subplots(figsize=(max(5, 1.8 * len(suites) + 2), 3.8), dpi=100)
    for index, model in enumerate(models):
        rows = [by_key.get((suite, model)) for suite in suites]
        scores = [r["score"] if r else 0 for r in rows]
        lower = [r["score"] - r["ci"][0] if r else 0 for r in rows]
        upper = [r["ci"][1] - r["score"] if r else 0 for r in rows]
        x = np.arange(len(suites)) + (index - (len(models) - 1) / 2) * width
        axis.bar(x, scores, width, yerr=[lower, upper], capsize=4, label=model)
    axis.set_xticks(np.arange(len(suites)), suites)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("score (95% CI)")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_report(folder: Path, report: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", render_markdown(report))
    atomic_write_bytes(folder / "report.png", render_png(report))


def load_report(path: Path) -> dict[str, Any]:
    from toolkit.errors import TuneserveError

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TuneserveError(f"baseline {path} is not a readable report.json ({exc})") from None
