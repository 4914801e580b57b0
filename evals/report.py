"""report.json, report.md and report.png (bars with 95% intervals), written atomically."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolkit.core.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from toolkit.core.errors import TuneserveError


def as_json(
    stats: list[Any], pairs: list[Any], meta: dict[str, Any], floors: list[Any] = ()
) -> dict[str, Any]:
    """`noise_floor`: the baseline against its own second pass, per suite (SPEC §8)."""
    return {
        "meta": meta,
        "models": [asdict(s) for s in stats],
        "comparisons": [asdict(p) for p in pairs],
        "noise_floor": [asdict(f) for f in floors],
    }


def item_records(
    suites: list[Any],
    models: list[str],
    answers: list[Any],
    scores: dict[tuple[str, str, bool], dict[str, float]],
) -> list[dict[str, Any]]:
    """Per item: what was asked and expected, and each model's answer and score (report.json's
    `items`), so a reader sees item by item what a change won and lost (the compare page)."""
    # the first answer of each item (a sampled item's first sample), not the noise-floor repeat
    by_item = {(a.suite, a.item, a.model): a for a in answers if not a.repeat and a.sample == 0}
    records = []
    for suite in suites:
        for item in suite.items:
            answered = {}
            for model in models:
                answer = by_item.get((suite.name, item.id, model))
                if answer is not None:
                    answered[model] = {
                        "output": answer.output,
                        "reasoning": answer.reasoning,
                        "score": scores[(suite.name, model, False)][item.id],
                        "error": answer.error,
                    }
            records.append(
                {
                    "suite": suite.name,
                    "id": item.id,
                    "scorer": item.scorer,
                    "messages": item.messages,
                    "expected": item.expected,
                    "answers": answered,
                }
            )
    return records


def _verdict(pair: dict[str, Any]) -> str:
    if pair.get("noninferior") is None:
        return "-"
    return "yes" if pair["noninferior"] else "**no**"


def _notes(report: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting a line: suites too small to show a change."""
    lines = []
    for pair in report["comparisons"]:
        if pair["suite"] == "guard" and pair.get("noninferior") is not None:
            low, high = pair["delta_ci"]
            kept = "keeps" if pair["noninferior"] else "**does not keep**"
            relation = "stays above" if pair["noninferior"] else "reaches"
            lines.append(
                f"- guard: {pair['model']} {kept} what {pair['baseline']} could do: the paired 95% "
                f"interval of the change, [{low:+.3f}, {high:+.3f}], {relation} "
                f"-{pair['margin']} (non-inferiority margin)."
            )
    shown = set()
    for pair in report["comparisons"]:
        n = pair["wins"] + pair["losses"] + pair["ties"]
        if pair.get("too_small") and pair["suite"] not in shown:
            shown.add(pair["suite"])
            lines.append(
                f"- {pair['suite']}: {n} items cannot show a significant change: even if every "
                f"item changed the same way, p would be {pair['smallest_p']:.3g} (> 0.05). "
                "Add items (a larger data.eval_split or your own suite)."
            )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Eval report", ""]
    meta = report["meta"]
    lines += [
        f"Endpoint `{meta['base_url']}`, models {', '.join(meta['models'])}, seed {meta['seed']}.",
        "",
    ]
    if meta.get("decoding"):
        decoded = "; ".join(f"{suite}: {how}" for suite, how in meta["decoding"].items())
        lines += [f"Decoding: {decoded}.", ""]
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
        margin = meta.get("guard_margin")
        lines += [
            "",
            f"| suite | change | delta | 95% CI | p | test | wins / losses / ties | "
            f"non-inferior (margin {margin}) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in report["comparisons"]:
            lines.append(
                f"| {p['suite']} | {p['baseline']} -> {p['model']} | {p['delta']:+.3f} | "
                f"[{p['delta_ci'][0]:+.3f}, {p['delta_ci'][1]:+.3f}] | {p['p_value']:.3g} | {p['test']} | "
                f"{p['wins']} / {p['losses']} / {p['ties']} | {_verdict(p)} |"
            )
    if report.get("noise_floor"):
        lines += [
            "",
            "Noise floor: the baseline answered every item twice; what changed between its two "
            "passes is what luck alone moves a score by here.",
            "",
            "| suite | model | items changed | delta | 95% CI |",
            "|---|---|---|---|---|",
        ]
        for f in report["noise_floor"]:
            lines.append(
                f"| {f['suite']} | {f['baseline']} | {f['wins'] + f['losses']} of "
                f"{f['wins'] + f['losses'] + f['ties']} | {f['delta']:+.3f} | "
                f"[{f['delta_ci'][0]:+.3f}, {f['delta_ci'][1]:+.3f}] |"
            )
    lines += _cache_lines(report)
    notes = _notes(report)
    if notes:
        lines += ["", *notes]
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
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TuneserveError(f"baseline {path} is not a readable report.json ({exc})") from None
