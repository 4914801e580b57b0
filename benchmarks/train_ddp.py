"""Data-parallel training throughput: `tuneserve train --nproc 2` vs `--nproc 1`, same global batch.

A random Qwen3-shaped model (tests.qwen3_shapes, default 1.7B dimensions, bf16) is trained with the
hf backend, LoRA r=32/alpha 32 on the 7 projections, rows of exactly --seq tokens, batch 2 x
accumulation 4 (8 rows a step; with 2 processes 2 x 2 x 2). Each run is the real CLI
(`python -m toolkit.cli train`, torchrun for --nproc 2); tokens/s are read from each run's
metrics.jsonl (the median of the steps after --warmup). Prints the ratio (goal >= 1.8x) and
writes train_ddp.md + train_ddp.json to --out.

  GPU:  PYTHONPATH=/tmp/site:. python3 benchmarks/train_ddp.py --tokenizer DIR --out OUT
  CPU:  .venv/bin/python benchmarks/train_ddp.py --smoke --out /tmp/ddp   (tiny shape, gloo)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOAL = 1.8
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "stone",
    "cloud",
    "paper",
    "light",
    "music",
    "garden",
    "number",
]


def child_env(models_dir: Path) -> dict[str, str]:
    env = dict(os.environ)  # keeps NCCL_* and the caller's PYTHONPATH (/tmp/site on the GPU box)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off (device notes)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["TUNESERVE_MODELS_DIR"] = str(models_dir)
    return env


def build_model(args: argparse.Namespace, folder: Path) -> Path:
    """A random Qwen3-shaped folder, built in a child so this process never holds a GPU."""
    shape = "tiny" if args.smoke else args.shape
    path = folder / f"qwen3-{shape}"
    if (path / "config.json").is_file():
        return path
    code = (
        "import sys, torch; from pathlib import Path; from tests.qwen3_shapes import build_qwen3\n"
        "device = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
        "with torch.device(device):\n"
        f"    build_qwen3(Path({str(path)!r}), {shape!r}, Path({str(args.tokenizer)!r}), "
        f"dtype={'float32' if args.smoke else 'bfloat16'!r})\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env(folder), cwd=REPO)
    print(f"built {shape} at {path} in {time.monotonic() - started:.0f} s", flush=True)
    return path


def write_data(path: Path, rows: int, seq: int) -> None:
    """Rows whose answer outruns --seq tokens: truncation makes every row exactly --seq long."""
    rng = random.Random(0)
    with path.open("w") as handle:
        for index in range(rows):
            answer = " ".join(rng.choice(WORDS) for _ in range(seq * 2))
            messages = [
                {"role": "user", "content": f"Write passage {index}."},
                {"role": "assistant", "content": answer},
            ]
            handle.write(json.dumps({"messages": messages, "mode": "chat"}) + "\n")


RECIPE = """\
name: ddp-{nproc}
model:
  name: {model}
  max_seq_length: {seq}
lora:
  r: 32
  lora_alpha: 32
  use_gradient_checkpointing: {checkpointing}
data:
  sources:
    - path: {data}
      format: messages
  eval_split: 0
train:
  backend: hf
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 4
  max_steps: {steps}
  warmup_steps: 1
  learning_rate: 1e-4
  logging_steps: 1
  save_steps: 100000
  nproc: {nproc}
"""


def run(args: argparse.Namespace, model: Path, data: Path, nproc: int, out: Path) -> dict:
    folder = out / f"nproc-{nproc}"
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        RECIPE.format(
            nproc=nproc,
            model=model,
            seq=args.seq,
            checkpointing="false" if args.smoke else "true",
            data=data,
            steps=args.warmup + args.steps,
        )
    )
    command = [sys.executable, "-m", "toolkit.cli", "train", str(recipe), "--json"]
    started = time.monotonic()
    done = subprocess.run(
        command, env=child_env(folder / "models"), cwd=REPO, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"--nproc {nproc} failed (exit {done.returncode}):\n{tail}")
    result = json.loads(done.stdout)
    metrics_file = folder / "models" / "runs" / f"ddp-{nproc}" / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    steady = [row for row in metrics if row["step"] > args.warmup]
    rates = [row["tokens_per_second"] for row in steady]
    return {
        "nproc": nproc,
        "batch": f"2 x {4 // nproc} x {nproc}",
        "tokens_per_s": statistics.median(rates),
        "rates": rates,
        "steps_timed": len(steady),
        "peak_gib": max(row["memory_gib"] for row in metrics),
        "final_loss": result["final_loss"],
        "wall_s": round(seconds, 1),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gpu = ""
    found["gpu"] = gpu.replace("\n", "; ") or "none (CPU, gloo)"
    found["python"] = sys.version.split()[0]
    return found


def render(rows: list[dict], ratio: float, args: argparse.Namespace, info: dict) -> str:
    shape = "tiny (smoke, CPU)" if args.smoke else args.shape
    lines = [
        f"# DDP training throughput: {shape}, seq {args.seq}, LoRA r=32, global batch 8 rows",
        "",
        "| processes | per device x accum x procs | tokens/s (median) | steps timed "
        "| peak GiB (rank 0) | final loss | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['nproc']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['steps_timed']} "
            f"| {r['peak_gib']:.2f} | {r['final_loss']:.4f} | {r['wall_s']:.0f} |"
        )
    verdict = "" if args.smoke else (" (goal met)" if ratio >= GOAL else " (goal NOT met)")
    lines += [
        "",
        f"**{rows[-1]['nproc']} processes / 1 process: {ratio:.2f}x** (goal >= {GOAL}x){verdict}",
        "",
        f"Warm-up steps skipped: {args.warmup}. Command: `{' '.join(sys.argv)}`",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny shape, gloo")
    parser.add_argument("--shape", default="1.7b")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder")
    parser.add_argument("--model", type=Path, default=None, help="use this model folder")
    parser.add_argument("--out", type=Path, default=None, help="folder for results")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the parallel run")
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    args.seq = args.seq or (128 if args.smoke else 2048)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    args.steps = args.steps or (4 if args.smoke else 12)
    if 4 % args.nproc:
        raise SystemExit("--nproc must divide the accumulation of 4 (1, 2 or 4)")
    out = (args.out or Path(tempfile.mkdtemp(prefix="train-ddp-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.tokenizer is None:
        from toolkit.base_models.builtin import materialize

        args.tokenizer = materialize("smollm2-135m")
    model = args.model or build_model(args, out / "models")
    data = out / "rows.jsonl"
    write_data(data, 8 * (args.warmup + args.steps) + 8, args.seq)
    rows = []
    for nproc in (1, args.nproc):
        row = run(args, model.resolve(), data, nproc, out)
        print(f"--nproc {nproc}: {row['tokens_per_s']:,.0f} tokens/s ({row['rates']})", flush=True)
        rows.append(row)
    ratio = rows[-1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    info = versions()
    table = render(rows, ratio, args, info)
    (out / "train_ddp.md").write_text(table)
    (out / "train_ddp.json").write_text(json.dumps({"rows": rows, "ratio": ratio, **info}))
    print(table)


if __name__ == "__main__":
    main()
