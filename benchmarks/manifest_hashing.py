"""Manifest hashing on a run folder the size of a 14B merged16 export (issue 22).

A run folder's manifest is refreshed after every stage (train, each export format, eval). The
first refresh after a file changes reads it whole (sha256); later refreshes keep the hash of any
file whose size and modification time are unchanged. Side by side in one run: a refresh that
re-reads everything (what every refresh cost before) vs one that trusts unchanged files, and
`tuneserve verify` (always reads everything) vs the per-command check (`trust_unchanged`).

    python benchmarks/manifest_hashing.py [--gib 28] [--folder /tmp/hashing] [--out FILE.md]

The shards are written first, so they are in the page cache: the figures are sha256 speed on
this CPU, not disk speed (a cold read adds the disk's own time to the full passes only).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

from toolkit.core.artifacts import file_entries, update_manifest, verify_manifest

SHARD_GIB = 5  # safetensors shards of a 14B model are ~5 GB each


def write_shards(folder: Path, gib: float) -> int:
    """Shards of pseudo-random bytes adding up to `gib` GiB; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(64 << 20)
    total, index = int(gib * (1 << 30)), 0
    left = total
    while left > 0:
        size = min(left, SHARD_GIB << 30)
        with open(folder / f"model-{index:05d}.safetensors", "wb") as shard:
            written = 0
            while written < size:
                piece = block[: min(len(block), size - written)]
                shard.write(piece)
                written += len(piece)
        left, index = left - size, index + 1
    (folder / "config.json").write_text("{}\n")
    return total


def timed(action) -> float:  # noqa: ANN001
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=28.0)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/hashing"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    shutil.rmtree(args.folder, ignore_errors=True)
    run = args.folder / "runs" / "big"
    size = write_shards(run / "merged16", args.gib)
    first = timed(lambda: update_manifest(run, stage="export"))  # a new export: read once
    full = timed(lambda: file_entries(run))  # every refresh, before: everything read again
    trusted = timed(lambda: update_manifest(run, stage="eval"))  # unchanged: nothing read
    verify_all = timed(lambda: verify_manifest(run))  # `tuneserve verify`
    verify_quick = timed(lambda: verify_manifest(run, trust_unchanged=True))
    gib = size / (1 << 30)
    lines = [
        "# Manifest hashing on a 14B-sized run folder",
        "",
        f"`python benchmarks/manifest_hashing.py --gib {args.gib:g}` on {platform.node()} "
        f"({os.cpu_count()} CPUs), {gib:.1f} GiB in {SHARD_GIB} GiB shards, page-cached:",
        "",
        "| pass | seconds | GiB/s |",
        "|---|---|---|",
        f"| first refresh after the export (reads every file) | {first:.2f} | {gib / first:.2f} |",
        f"| a refresh re-reading everything (every refresh, before) | {full:.2f} | {gib / full:.2f} |",
        f"| a refresh with nothing changed (size + mtime kept) | {trusted:.3f} | - |",
        f"| `tuneserve verify` (reads every file) | {verify_all:.2f} | {gib / verify_all:.2f} |",
        f"| the check on every command (`trust_unchanged`) | {verify_quick:.3f} | - |",
        "",
        f"A refresh with nothing changed costs {trusted / full:.4f}x a full one "
        f"({full / max(trusted, 1e-6):.0f}x faster).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
