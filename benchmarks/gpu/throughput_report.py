"""Ratios, MFU, goals and the markdown table of benchmarks/train_throughput.py."""

from __future__ import annotations

from typing import Any

GOALS = {"best": 2.5, "same": 2.0, "memory": 0.3, "mfu": 0.40}


def _find(rows: list[dict], backend: str, label: str) -> dict | None:
    return next((r for r in rows if r["backend"] == backend and r["label"] == label), None)


def _ok(row: dict | None) -> bool:
    return row is not None and "error" not in row


def summarize(rows: list[dict], peak_tflops: float) -> dict[str, Any]:
    for row in rows:
        if _ok(row):
            row["tflops"] = row["flops"] / row["seconds"] / 1e12
            row["mfu"] = row["tflops"] / peak_tflops
    pairs = []
    for label in ("same-bf16", "same-4bit", "mix-padded", "mix-packed", "8b-4bit"):
        hf, un = _find(rows, "hf", label), _find(rows, "unsloth", label)
        if _ok(hf) and _ok(un):
            pairs.append((label, un, hf))
    # The same config with Unsloth's checkpointing as plain recomputation (no CPU offload).
    hf, un = _find(rows, "hf", "same-bf16"), _find(rows, "unsloth", "same-bf16-ckpt-true")
    if _ok(hf) and _ok(un):
        pairs.append(("same-bf16, unsloth checkpointing=True", un, hf))
    best = None
    hf_same = _find(rows, "hf", "same-bf16")
    hf_mix = _find(rows, "hf", "mix-padded")
    if _ok(hf_same) and _ok(hf_mix):
        limit = hf_same.get("peak_gib", float("inf"))
        fits = [
            r
            for r in rows
            if r["backend"] == "unsloth"
            and _ok(r)
            and r["data"] == "packed"
            and r.get("peak_gib", 0) <= limit
        ]
        best = max(fits, key=lambda r: r["tokens_per_s"], default=None)
        # The honest baseline for a packed best config is hf's best on the same length mix.
        mixes = [r for r in (hf_mix, _find(rows, "hf", "mix-packed")) if _ok(r)]
        hf_mix = max(mixes, key=lambda r: r["tokens_per_s"])
    return {"rows": rows, "pairs": pairs, "best": best, "hf_mix": hf_mix, "hf_same": hf_same}


def _row_line(r: dict) -> str:
    if not _ok(r):
        return f"| {r['backend']} | {r['label']} | {r['batch']}x{r['accum']} | {r['data']} | {r['error']} |||||"
    peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
    return (
        f"| {r['backend']} | {r['label']} | {r['batch']}x{r['accum']} | {r['data']} "
        f"| {r['tokens_per_s']:,.0f} | {peak} | {r['fill']:.2f} | {r['tflops']:.0f} "
        f"| {100 * r['mfu']:.1f}% | {r['loss']:.3f} |"
    )


def render(summary: dict, info: dict, peak_tflops: float, args: Any) -> str:
    rows, pairs, best = summary["rows"], summary["pairs"], summary["best"]
    lines = [
        "| backend | config | batch x accum | data | tokens/s | peak GiB | fill | TFLOP/s | MFU | loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row_line(r) for r in rows),
        "",
    ]
    goals = []
    if pairs:
        lines += [
            "| same config | unsloth / hf tokens/s | unsloth / hf peak memory |",
            "|---|---|---|",
        ]
        for label, un, hf in pairs:
            speed, memory = un["tokens_per_s"] / hf["tokens_per_s"], un["peak_gib"] / hf["peak_gib"]
            lines.append(f"| {label} | **{speed:.2f}x** | **{memory:.2f}x** |")
            if label.startswith(("same-bf16", "same-4bit")):
                goals.append((f"same-config speed ({label})", speed, GOALS["same"], speed >= 2.0))
                goals.append((f"peak memory ({label})", memory, GOALS["memory"], memory <= 0.3))
        lines.append("")
    if best is not None:
        hf_mix, hf_same = summary["hf_mix"], summary["hf_same"]
        ratio = best["tokens_per_s"] / hf_mix["tokens_per_s"]
        lines += [
            f"Best unsloth config within the hf backend's same-config peak ({hf_same['peak_gib']:.2f} GiB): "
            f"`{best['label']}` ({best['batch']}x{best['accum']}, packed) at {best['tokens_per_s']:,.0f} "
            f"useful tokens/s, {best['peak_gib']:.2f} GiB, MFU {100 * best['mfu']:.1f}%: "
            f"**{ratio:.2f}x** the hf backend's best on the same length mix (`{hf_mix['label']}`, "
            f"{hf_mix['tokens_per_s']:,.0f} tokens/s).",
            "",
        ]
        goals.append(
            ("best-config speed vs hf best on the mix", ratio, GOALS["best"], ratio >= 2.5)
        )
        goals.append(("MFU of the best config", best["mfu"], GOALS["mfu"], best["mfu"] >= 0.4))
    if goals:
        lines += ["| goal | measured | target | met |", "|---|---|---|---|"]
        for name, value, target, met in goals:
            shown = f"{100 * value:.1f}%" if "MFU" in name else f"{value:.2f}x"
            want = f"{100 * target:.0f}%" if "MFU" in name else f"{target}x"
            lines.append(
                f"| {name} | {shown} | {'<=' if 'memory' in name else '>='} {want} | {'yes' if met else 'NO'} |"
            )
        lines.append("")
    for r in rows:
        if r.get("kernels"):
            lines += [
                f"Top CUDA kernels, {r['backend']} {r['label']} (one optimizer step, torch.profiler):",
                "",
            ]
            lines += ["| kernel | share | ms | calls |", "|---|---|---|---|"]
            lines += [
                f"| `{k['kernel']}` | {100 * k['share']:.1f}% | {k['ms']} | {k['calls']} |"
                for k in r["kernels"][:10]
            ]
            lines.append("")
    lines += [
        f"MFU = (6 x N x tokens + attention FLOPs) / s / {peak_tflops:.0f} TFLOP/s (the issue's bf16 peak; "
        "the H100 SXM datasheet says 989 dense). N = parameters of the layers and the output head; "
        "attention FLOPs = 12 x layers x heads x head_dim x document length per token (PaLM). "
        "tokens/s and MFU count useful (non-pad) tokens only; fill = useful tokens / batch slots.",
        "",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ]
    return "\n".join(lines)
