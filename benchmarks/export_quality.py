"""Perplexity of GGUF quants relative to f16, side by side, on the demo run's held-out split.

Usage: .venv/bin/python benchmarks/export_quality.py [--run demo] [--out benchmarks/results/export_quality.md]
Trains the bundled demo (30 CPU steps) into a temp models/ folder when RUN does not exist yet.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

QUANTS = ["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="demo")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("TUNESERVE_MODELS_DIR", tempfile.mkdtemp(prefix="export-quality-"))
    from toolkit.core.artifacts import run_dir
    from toolkit.export.run_export import export_run
    from toolkit.pipeline.training import train
    from toolkit.recipe.loader import load_recipe

    if not (run_dir(args.run) / "adapter").is_dir():
        recipe = load_recipe(
            Path(__file__).resolve().parent.parent / "toolkit" / "demo" / "recipe.yaml"
        )
        train(recipe, backend="hf", progress=False)
    report = export_run(args.run, ["merged16", "gguf"], QUANTS)
    f16 = report["gguf-f16"]["ppl"]
    lines = [
        "# Export quality",
        "",
        "`benchmarks/export_quality.py`: perplexity over the demo run's held-out split through",
        "llama.cpp, for each quant of the same merged model, and its ratio to f16 (and to the",
        "merged model in transformers). SmolLM2-135M ships as Q4_1, and most of its matrices have",
        "576 columns, which k-quants cannot use (llama.cpp falls back to q5_0/q8_0 for those).",
        "",
        "| quant | size MiB | perplexity | ratio to f16 | ratio to merged16 | greedy match | flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for quant in QUANTS:
        row = report[f"gguf-{quant}"]
        lines.append(
            f"| {quant} | {row['size'] / 2**20:.0f} | {row['ppl']:.3f} | {row['ppl'] / f16:.4f} | "
            f"{row['ppl_ratio']:.4f} | {row['greedy_match']:.2f} | {'yes' if row['flagged'] else 'no'} |"
        )
    q4 = report["gguf-q4_k_m"]["ppl"] / f16
    lines += ["", f"q4_k_m / f16 perplexity ratio: **{q4:.4f}**", ""]
    merged = report["merged16"]
    lines.append(
        f"merge check: max |logit| diff fp32 merge vs base+adapter {merged['max_abs_logit_diff_fp32']:.2e}"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
