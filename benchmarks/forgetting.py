"""Forgetting on the demo task: plain training vs replay vs replay + guarded checkpoint choice.

Each configuration is the demo recipe (toolkit/demo/recipe.yaml) with a few `--set`s, run
end to end through the real CLI (`tuneserve run --no-serve`) from an empty models/ folder:
train (with replay generation and checkpoint selection where asked), export, eval of base and
tuned on heldout and the 300-item guard, greedy. Printed side by side: the heldout gain and
the guard change with their paired 95% intervals, the non-inferiority verdict at the margin,
the base's noise floor, and what each costs in time.

Usage: .venv/bin/python benchmarks/forgetting.py [--seeds 3407,1,2] [--only plain,replay]
       [--out benchmarks/results/forgetting.md]
The replay cache is cleared before each run that uses replay, so its generation is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    # the demo recipe with its forgetting defences switched off
    "plain": ["data.replay.ratio=0", "eval.select=false"],
    # the demo recipe as shipped
    "replay": ["eval.select=false"],
    "replay + select": ["eval.select=true"],
}


def read_run(run: Path, name: str, seed: int, total: float) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    report = json.loads((run / "eval" / "report.json").read_text())
    return {
        "config": name,
        "seed": seed,
        "stages": {k: v["seconds"] for k, v in manifest["stages"].items()},
        "total": total,
        "selected": manifest.get("selection", {}).get("chosen"),
        "pairs": {p["suite"]: p for p in report["comparisons"]},
        "scores": {(s["suite"], s["model"]): s["score"] for s in report["models"]},
        "floor": {f["suite"]: f for f in report.get("noise_floor", [])},
    }


def run_config(name: str, overrides: list[str], seed: int) -> dict:
    from toolkit.core.artifacts import base_models_dir

    models = Path(tempfile.mkdtemp(prefix="forgetting-"))
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(models)}
    shutil.rmtree(base_models_dir() / "replay", ignore_errors=True)  # count its generation
    command = [sys.executable, "-m", "toolkit.cli", "run", "toolkit/demo/recipe.yaml", "--no-serve"]
    for override in [*overrides, f"train.seed={seed}"]:
        command += ["--set", override]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    total = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    row = read_run(models / "runs" / "demo", name, seed, total)
    shutil.rmtree(models, ignore_errors=True)
    return row


def interval(pair: dict) -> str:
    low, high = pair["delta_ci"]
    return f"{pair['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| config | seed | heldout base -> tuned | heldout delta [95% CI], p | guard base -> tuned "
        "| guard delta [95% CI] | non-inferior (0.05) | noise floor (items changed) "
        "| train s (incl. replay gen, selection) | total s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        held, guard = row["pairs"]["heldout"], row["pairs"]["guard"]
        floor = sum(f["wins"] + f["losses"] for f in row["floor"].values())
        chosen = f" ({row['selected']})" if row["selected"] else ""
        lines.append(
            f"| {row['config']}{chosen} | {row['seed']} "
            f"| {row['scores'][('heldout', 'base')]:.3f} -> {row['scores'][('heldout', 'tuned')]:.3f} "
            f"| {interval(held)}, p={held['p_value']:.2g} "
            f"| {row['scores'][('guard', 'base')]:.3f} -> {row['scores'][('guard', 'tuned')]:.3f} "
            f"| {interval(guard)} | {'yes' if guard['noninferior'] else '**no**'} | {floor} "
            f"| {row['stages']['train']:.0f} | {row['total']:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3407")
    parser.add_argument("--only", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--from",
        dest="runs",
        nargs="*",
        default=None,
        metavar="CONFIG:SEED:RUN_DIR",
        help="tabulate finished runs instead (total = the sum of their stages)",
    )
    args = parser.parse_args()
    if args.runs is not None:
        rows = []
        for spec in args.runs:
            name, seed, folder = spec.split(":", 2)
            row = read_run(Path(folder), name, int(seed), 0.0)
            row["total"] = sum(row["stages"].values())
            rows.append(row)
        text = "\n".join(["# Forgetting on the demo task", "", *table(rows)]) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    from toolkit.base_models.builtin import materialize

    materialize("smollm2-135m")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.only.split(","):
            rows.append(run_config(name, CONFIGS[name], seed))
            print("\n".join(table(rows[-1:])), flush=True)
    text = "\n".join(["# Forgetting on the demo task", "", *table(rows)]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
