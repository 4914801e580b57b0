"""`tuneserve --help` wall time over `python -c "import click"`, side by side (goal <= 1.5x).

Usage: .venv/bin/python benchmarks/cli_startup.py [--runs 30] [--out benchmarks/results/cli_startup.md]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(command: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    script = shutil.which("tuneserve", path=str(Path(sys.executable).parent)) or "tuneserve"
    # Interleave warm-up runs so both commands see the same file cache.
    median_seconds([sys.executable, "-c", "import click"], 3)
    median_seconds([script, "--help"], 3)
    click_s = median_seconds([sys.executable, "-c", "import click"], args.runs)
    help_s = median_seconds([script, "--help"], args.runs)
    ratio = help_s / click_s
    lines = [
        "# CLI startup",
        "",
        f"`{Path(sys.argv[0]).as_posix()} --runs {args.runs}`, median of {args.runs} runs each:",
        "",
        "| command | median ms |",
        "|---|---|",
        f'| `python -c "import click"` | {click_s * 1000:.1f} |',
        f"| `tuneserve --help` | {help_s * 1000:.1f} |",
        "",
        f"ratio: **{ratio:.2f}x** (goal <= 1.5x)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
