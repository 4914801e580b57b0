"""Per-stage wall time of `tuneserve demo` from an empty models/ folder (goal: <= 10 min).

Usage: .venv/bin/python benchmarks/demo_time.py [--out benchmarks/results/demo_time.md]
The embedded base model is materialized before timing starts (a one-time install step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from toolkit.base_models.builtin import materialize

    materialize("smollm2-135m")
    models = Path(tempfile.mkdtemp(prefix="demo-time-"))
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(models)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "toolkit.cli", "demo"], check=True, env=env)
    total = time.monotonic() - started
    manifest = json.loads((models / "runs" / "demo" / "manifest.json").read_text())
    report = json.loads((models / "runs" / "demo" / "eval" / "report.json").read_text())
    lines = [
        "# Demo time",
        "",
        f"`benchmarks/demo_time.py` on {os.cpu_count()} CPU cores, empty models/ (base model already materialized):",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    stages = manifest["stages"]
    lines += [f"| {name} | {stages[name]['seconds']:.0f} |" for name in ("train", "export", "eval")]
    lines += [f"| **total (incl. start-up)** | **{total:.0f}** |", "", "Scores:", ""]
    lines += [
        f"- {s['suite']} / {s['model']}: {s['score']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
        for s in report["models"]
    ]
    lines += [
        f"- {p['suite']}: {p['baseline']} -> {p['model']} {p['delta']:+.3f} "
        f"[{p['delta_ci'][0]:+.3f}, {p['delta_ci'][1]:+.3f}], p={p['p_value']:.3g}"
        for p in report["comparisons"]
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
