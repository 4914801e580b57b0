"""Training throughput of the unsloth backend vs the hf backend (transformers + PEFT), side by side.

Same GPU, same random-initialised Qwen3-shaped model (built locally by tests.qwen3_shapes), same
token stream, same loop: LoRA r=32/alpha 32 on the 7 projections, bf16 or 4-bit, seq 2048,
batch 2 x accumulation 4, AdamW 8-bit, a few warm-up steps, then timed steps. Each backend runs
in its own process (unsloth patches transformers on import). Prints tokens/s, peak GPU memory,
the ratios and MFU; writes a markdown table with the exact versions.

  GPU:  PYTHONPATH=/tmp/site:. python3 benchmarks/train_throughput.py --tokenizer DIR --out OUT
  CPU:  .venv/bin/python benchmarks/train_throughput.py --smoke      (tiny shape, hf only)
  Join: python benchmarks/train_throughput.py --render OUT1 OUT2 > benchmarks/results/train_throughput.md
        (the device runs each backend in its own call, see benchmarks/gpu/README.md)
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

from throughput_loop import run_worker  # noqa: E402
from throughput_report import render, summarize  # noqa: E402

PEAK_TFLOPS = 790.0  # the bf16 figure (a measured 8192^3 bf16 matmul gave ~798 here)

# Each config: a label, the model key (models load once per key; "-4" = 4-bit), the data kind
# (fixed 2048-token rows, padded documents, packed documents), batch x accumulation.
BASE = dict(batch=2, accum=4, checkpointing="unsloth", profile=False, data="fixed")


def plan(
    smoke: bool, big: bool, only: str | None, labels: list[str] | None = None
) -> dict[str, list[dict]]:
    """The configs each backend process runs, in order (models load once per key)."""
    if smoke:
        hf = [
            {**BASE, "label": "same-bf16", "model": "main-16"},
            {**BASE, "label": "mix-padded", "model": "main-16", "data": "padded"},
            {**BASE, "label": "mix-packed", "model": "main-16", "data": "packed"},
        ]
        return {"hf": hf}
    if big:
        row = {**BASE, "label": "8b-4bit", "model": "big-4", "batch": 2}
        return {"hf": [row], "unsloth": [{**row, "profile": True}]}
    common = [
        {**BASE, "label": "same-bf16", "model": "main-16", "profile": True},
        {**BASE, "label": "mix-padded", "model": "main-16", "data": "padded"},
        {**BASE, "label": "mix-packed", "model": "main-16", "data": "packed"},
        {**BASE, "label": "same-4bit", "model": "main-4"},
    ]
    best = [
        {**BASE, "label": f"best-packed-b{b}", "model": "main-16", "data": "packed", "batch": b}
        for b in (4, 8, 16)
    ]
    best[-1]["profile"] = True
    no_ckpt = {
        **BASE,
        "label": "best-packed-nockpt-b2",
        "model": "main-16-nockpt",
        "data": "packed",
        "checkpointing": False,
    }
    # Unsloth's "unsloth" checkpointing offloads activations to the CPU; plain recomputation
    # (True) keeps them on the GPU, which costs little memory at batch 2 on this shape.
    recompute = {
        **BASE,
        "label": "same-bf16-ckpt-true",
        "model": "main-16-ckpt-true",
        "checkpointing": True,
    }
    runs = {"hf": common, "unsloth": common[:3] + best + common[3:] + [no_ckpt, recompute]}
    runs = {k: v for k, v in runs.items() if only in (None, k)}
    if labels:
        runs = {k: [c for c in v if c["label"] in labels] for k, v in runs.items()}
    return runs


def build_models(args: argparse.Namespace, keys: set[str], folder: Path) -> dict[str, str]:
    """Random-initialised Qwen3-shaped folders, built on the GPU when there is one."""
    import torch

    from tests.qwen3_shapes import build_qwen3

    shape = "tiny" if args.smoke else ("8b" if args.big else args.shape)
    path = folder / f"qwen3-{shape}"
    if not (path / "config.json").is_file():
        started = time.monotonic()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            build_qwen3(path, shape, args.tokenizer, dtype="float32" if args.smoke else "bfloat16")
        torch.cuda.empty_cache()
        print(f"built {shape} at {path} in {time.monotonic() - started:.0f} s", flush=True)
    return {key: str(path) for key in keys}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "unsloth", "unsloth_zoo"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        gpu = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gpu = ""
    found["gpu"] = gpu or "none (CPU)"
    found["python"] = sys.version.split()[0]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny shape, hf only")
    parser.add_argument("--big", action="store_true", help="Qwen3-8B dimensions, 4-bit only")
    parser.add_argument("--shape", default="1.7b")
    parser.add_argument("--only", choices=["hf", "unsloth"])
    parser.add_argument("--labels", nargs="+", help="run only these configs (e.g. a re-run)")
    parser.add_argument(
        "--tokenizer", type=Path, default=REPO / "models/base/smollm2-135m-instruct"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for results/profiles")
    parser.add_argument("--models", type=Path, default=None, help="where built models go")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--render", nargs="+", type=Path, help="only render the table from earlier --out folders"
    )
    args = parser.parse_args()
    if args.render:
        print(render_from(args.render, args))
        return
    if args.worker:
        run_worker(json.loads(Path(args.worker).read_text()))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = args.out or Path(tempfile.mkdtemp(prefix="train-throughput-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(args.smoke, args.big, args.only, args.labels)
    keys = {c["model"] for configs in runs.values() for c in configs}
    paths = build_models(args, keys, args.models or Path(tempfile.mkdtemp(prefix="tt-models-")))
    seq = 128 if args.smoke else 2048
    warmup = (
        args.warmup if args.warmup is not None else (1 if args.smoke else (2 if args.big else 3))
    )
    steps = args.steps if args.steps is not None else (2 if args.smoke else (3 if args.big else 6))
    results_file = out / "results.jsonl"
    results_file.unlink(missing_ok=True)
    for backend, configs in runs.items():
        job = {
            "backend": backend,
            "configs": configs,
            "models": paths,
            "seq": seq,
            "warmup": warmup,
            "steps": steps,
            "smoke": args.smoke,
            "results": str(results_file),
            "out": str(out),
        }
        job_file = out / f"job-{backend}.json"
        job_file.write_text(json.dumps(job))
        started = time.monotonic()
        code = subprocess.call([sys.executable, __file__, "--worker", str(job_file)])
        print(
            f"{backend} process: exit {code} after {time.monotonic() - started:.0f} s", flush=True
        )
    (out / "versions.json").write_text(json.dumps(versions()))
    table = render_from([out], args)
    (out / "train_throughput.md").write_text(table)
    print(table)


def render_from(folders: list[Path], args: argparse.Namespace) -> str:
    """One table from the results.jsonl and versions.json of one or more runs."""
    rows = [
        json.loads(line)
        for folder in folders
        for line in (folder / "results.jsonl").read_text().splitlines()
        if line
    ]
    info = json.loads((folders[0] / "versions.json").read_text())
    for folder in folders[1:]:  # each backend's process records the versions it imported
        for name, value in json.loads((folder / "versions.json").read_text()).items():
            if info.get(name) in (None, "absent"):
                info[name] = value
    return render(summarize(rows, PEAK_TFLOPS), info, PEAK_TFLOPS, args)


if __name__ == "__main__":
    main()
