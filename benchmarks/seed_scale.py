"""Seed scale (issue 22): the seeds' own recipes on Qwen3-8B and Qwen3-14B shapes, through
`tuneserve train` and `tuneserve export` themselves, with the whole job projected.

The GPU stage `benchmarks/gpu/seed_scale.sh` runs these steps in order; each is also usable here
on the tiny shape (`--shape tiny`, hf backend) to check the plumbing:

  data     rows with a stated length mix, their real token lengths measured with the tokenizer
  recipe   one config's recipe (the seed as written, or a change to it)
  collect  one finished run folder -> a results row (tokens/s, peak memory, MFU, wall time)
  render   results.jsonl + export.json -> markdown

The length mixes are assumptions, stated here and in the results:
- `sharegpt` (seed 004 trains on 10,000 ShareGPT rows): a conversation's length is log-normal
  with a median of 700 tokens and sigma 0.9: mean ~1,050, ~2.5% beyond 4,096 (cut by the
  recipe's max_seq_length), one to four exchanges, the answers three quarters of the tokens.
  Chosen to match the usual description of ShareGPT (conversations around a thousand tokens
  with a long tail), not measured on it: nothing downloads here.
- `reasoning` + `chat` (seed 000's 75/25 mix): reasoning rows carry a `<think>` block, median
  1,400 tokens, sigma 0.6 (a quarter beyond the seed's 2,048 and cut there, as long math
  solutions are); chat rows median 500, sigma 0.8.
Text is common English words (one token each for SmolLM2's tokenizer, which the shapes use).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

PEAK_TFLOPS = 790.0  # H200 bf16 dense, as in train_throughput.py
WORDS = (  # noqa: SIM905 (a sentence reads better than 120 quoted words)
    "the of and to in is was for on that with as by at from his it an were are which this be "
    "has had one their not but first also its new after who they have her she two been other "
    "when there all during into school time may years more most only over city some world "
    "would where later up such used many can state about national out known university united "
    "then made this between team year under film part people three group music number being "
    "same before well high both three each where while them water south north river four "
    "season over game made long just like work home life house place name because right small"
).split()
LENGTHS = {  # kind: (median tokens, sigma, share of the rows in its mix)
    "sharegpt": (700, 0.9),
    "reasoning": (1400, 0.6),
    "chat": (500, 0.8),
}
# The seeds' recipes as written (../shared/seeds/000_*, 004_*), and the changes measured.
SEED_004 = {
    "model": {"max_seq_length": 4096, "load_in_4bit": True},
    "lora": {"r": 16, "lora_alpha": 16, "lora_dropout": 0.05, "use_gradient_checkpointing": True},
    "train": {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "learning_rate": 2e-5,
        "warmup_steps": 5,
        "optim": "adamw_8bit",
    },
}
SEED_000 = {
    "model": {"max_seq_length": 2048, "load_in_4bit": True},
    "lora": {
        "r": 32,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "use_gradient_checkpointing": "unsloth",
    },
    "train": {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "learning_rate": 2e-4,
        "warmup_steps": 5,
        "optim": "adamw_8bit",
    },
}


def merged(base: dict, changes: dict) -> dict:
    """`base` with each section updated by `changes` (a recipe and what a config changes)."""
    out = {key: dict(value) for key, value in base.items()}
    for section, values in changes.items():
        out.setdefault(section, {}).update(values)
    return out


# What the results file recommends for seed 004: dropout 0, checkpointing auto, packing.
TUNED = {
    "lora": {"lora_dropout": 0.0, "use_gradient_checkpointing": "auto"},
    "train": {"packing": True},
}
OFFLOAD = {"lora": {"use_gradient_checkpointing": "unsloth"}}
CONFIGS = {  # name: (seed, changes, what it shows)
    "004-as-written": (SEED_004, {}, "seed 004 as written (recompute, dropout 0.05, no packing)"),
    "004-tuned": (SEED_004, TUNED, "dropout 0, checkpointing auto, packing"),
    "004-offload": (SEED_004, OFFLOAD, "seed 004 with offloaded checkpointing (the memory floor)"),
    "004-dropout0": (SEED_004, {"lora": {"lora_dropout": 0.0}}, "seed 004 with dropout 0 only"),
    "004-packing": (SEED_004, {"train": {"packing": True}}, "seed 004 with packing only"),
    "004-tuned-offload": (
        SEED_004,
        merged(TUNED, OFFLOAD),
        "dropout 0, offloaded checkpointing, packing",
    ),
    "004-tuned-b4": (
        SEED_004,
        merged(
            TUNED, {"train": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}}
        ),
        "tuned, micro-batch 4 x 2 (same global batch)",
    ),
    "000-as-written": (SEED_000, {}, "seed 000 as written (offload, no packing)"),
    "000-tuned": (
        SEED_000,
        {"lora": {"use_gradient_checkpointing": "auto"}, "train": {"packing": True}},
        "checkpointing auto, packing",
    ),
}
JOBS = {  # seed: (rows, epochs or None, max_steps or None), as the seeds write their jobs
    "004": (10_000, 2, None),
    "000": (None, None, 30),
}


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, count)))


def conversation(rng: random.Random, kind: str) -> dict:
    median, sigma = LENGTHS[kind]
    total = max(64, int(rng.lognormvariate(math.log(median), sigma)))
    exchanges = 1 if kind == "reasoning" else rng.randint(1, 4)
    turns = []
    for _ in range(exchanges):
        share = total // exchanges
        question, answer = words(rng, share // 4), words(rng, share - share // 4)
        if kind == "reasoning":
            cut = len(answer) * 4 // 5
            answer = f"<think>\n{answer[:cut]}\n</think>\n\n{answer[cut:]}"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"conversations": turns}


def make_data(kinds: list[str], rows: int, out: Path, tokenizer: Path | None, seed: int) -> dict:
    """One JSONL file per kind; the token lengths through the chat template, if a tokenizer."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for kind in kinds:
        data = [conversation(rng, kind) for _ in range(rows)]
        (out / f"{kind}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in data))
        if tokenizer is not None:
            stats[kind] = token_lengths(data, tokenizer)
    (out / "lengths.json").write_text(json.dumps(stats))
    return stats


def token_lengths(data: list[dict], tokenizer_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    from toolkit.train.templates import QWEN3

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.add_tokens(["<think>", "</think>"])
    roles = {"human": "user", "gpt": "assistant"}
    lengths = []
    for row in data:
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]
        text = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=QWEN3)
        lengths.append(len(tokenizer(text)["input_ids"]))
    return lengths


def recipe_text(config: str, model: Path, data: Path, steps: int) -> str:
    import yaml

    seed, changes, _ = CONFIGS[config]
    recipe = merged(seed, changes)
    recipe["model"]["name"] = str(model)
    # Every step logged (the throughput is a median over steps); no checkpoint inside the run.
    recipe["train"].update(max_steps=steps, logging_steps=1, save_steps=10_000)
    if config.startswith("004"):
        recipe["data"] = {"sources": [str(data / "sharegpt.jsonl")], "eval_split": 0.02}
    else:
        recipe["data"] = {
            "sources": [str(data / "reasoning.jsonl"), str(data / "chat.jsonl")],
            "mix": {"reasoning": 0.75, "chat": 0.25},
            "eval_split": 0.02,
        }
    recipe["name"] = f"seed-{config}"
    return yaml.safe_dump(recipe, sort_keys=False)


# ---------------------------------------------------------------- results


def count_params(config: dict) -> int:
    """Parameters a token's matmuls pass through (as in train_throughput.py)."""
    d, inter, layers = (
        config["hidden_size"],
        config["intermediate_size"],
        config["num_hidden_layers"],
    )
    heads, kv, head_dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )
    attention = d * heads * head_dim * 2 + d * kv * head_dim * 2
    return layers * (attention + 3 * d * inter) + config["vocab_size"] * d


def flops_per_token(config: dict, lengths: list[int], max_len: int) -> float:
    """6N per token plus attention over each document (PaLM's 12 x layers x heads x head_dim
    x context), with documents cut at max_len as training cuts them."""
    cut = [min(length, max_len) for length in lengths]
    per = 12 * config["num_hidden_layers"] * config["num_attention_heads"] * config["head_dim"]
    attention = per * sum(c * c for c in cut) / sum(cut)
    return 6 * count_params(config) + attention


def collect(
    run: Path, config: str, wall_s: float, model: Path, lengths: dict, log: Path | None
) -> dict:
    from toolkit.train.metrics import read_metrics

    metrics = read_metrics(run / "metrics.jsonl")
    if not metrics:
        raise SystemExit(f"{run}: no metrics.jsonl lines; the training did not log a step")
    steady = [m["tokens_per_second"] for m in metrics[2:]] or [0.0]  # 2 warm-up steps
    model_config = json.loads((model / "config.json").read_text())
    seed, changes, what = CONFIGS[config]
    recipe = merged(seed, changes)
    max_len = recipe["model"]["max_seq_length"]
    kinds = ["sharegpt"] if config.startswith("004") else ["reasoning", "chat"]
    doc_lengths = [n for kind in kinds for n in lengths.get(kind, [])]
    tokens_s = statistics.median(steady)
    row = {
        "config": config,
        "what": what,
        "shape": model.name,
        "steps": len(metrics),
        "tokens_per_s": tokens_s,
        "peak_gib": max((m["memory_gib"] for m in metrics), default=0.0),
        "loss": metrics[-1]["loss"] if metrics else None,
        "wall_s": wall_s,
        "checkpointing": checkpointing_line(log),
    }
    if doc_lengths:
        flops = flops_per_token(model_config, doc_lengths, max_len)
        row["mfu"] = flops * tokens_s / (PEAK_TFLOPS * 1e12)
        row["mean_tokens"] = statistics.fmean(min(n, max_len) for n in doc_lengths)
    return row


def checkpointing_line(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("checkpointing: ")
    ]
    return lines[-1].removeprefix("checkpointing: ") if lines else ""


def projected_minutes(row: dict, seed: str) -> float | None:
    rows, epochs, steps = JOBS[seed]
    if not row.get("tokens_per_s") or not row.get("mean_tokens"):
        return None
    if steps is not None:  # seed 000 writes max_steps=30 of 2 x 4 rows
        tokens = steps * 8 * row["mean_tokens"]
    else:
        tokens = rows * epochs * row["mean_tokens"]
    return tokens / row["tokens_per_s"] / 60


def render(results: list[dict], export: dict | None, info: dict) -> str:
    lines = [
        "# Seed scale: the seeds' recipes on Qwen3-8B and Qwen3-14B shapes, through the product",
        "",
        f"GPU: {info.get('gpu', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in info.items() if k != "gpu"),
        "",
        "| shape | config | what | tokens/s | peak GiB | MFU | checkpointing | projected job |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        seed = row["config"][:3]
        minutes = projected_minutes(row, seed)
        projected = f"{minutes:.0f} min" if minutes is not None else "-"
        mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") else "-"
        lines.append(
            f"| {row['shape']} | {row['config']} | {row['what']} | {row['tokens_per_s']:,.0f} "
            f"| {row['peak_gib']:.2f} | {mfu} | {row['checkpointing'] or '-'} | {projected} |"
        )
    if export:
        lines += ["", "| export step | seconds | peak host GiB | disk GiB |", "|---|---|---|---|"]
        for step in export.get("steps", []):
            lines.append(
                f"| {step['name']} | {step['seconds']:.0f} | {step.get('host_gib', 0):.1f} "
                f"| {step.get('disk_gib', 0):.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    data.add_argument("--kinds", nargs="+", default=["sharegpt", "reasoning", "chat"])
    data.add_argument("--rows", type=int, default=400)
    data.add_argument("--out", type=Path, required=True)
    data.add_argument("--tokenizer", type=Path)
    data.add_argument("--seed", type=int, default=0)
    recipe = sub.add_parser("recipe")
    recipe.add_argument("config", choices=sorted(CONFIGS))
    recipe.add_argument("--model", type=Path, required=True)
    recipe.add_argument("--data", type=Path, required=True)
    recipe.add_argument("--steps", type=int, default=8)
    got = sub.add_parser("collect")
    got.add_argument("config", choices=sorted(CONFIGS))
    got.add_argument("--run", type=Path, required=True)
    got.add_argument("--model", type=Path, required=True)
    got.add_argument("--data", type=Path, required=True)
    got.add_argument("--wall", type=float, required=True)
    got.add_argument("--log", type=Path)
    shown = sub.add_parser("render")
    shown.add_argument("results", type=Path)
    shown.add_argument("--export", type=Path)
    shown.add_argument("--info", type=Path)
    args = parser.parse_args()
    if args.command == "data":
        stats = make_data(args.kinds, args.rows, args.out, args.tokenizer, args.seed)
        for kind, lengths in stats.items():
            print(
                f"{kind}: {len(lengths)} rows, mean {statistics.fmean(lengths):.0f} tokens, "
                f"median {statistics.median(lengths):.0f}, max {max(lengths)}"
            )
    elif args.command == "recipe":
        print(recipe_text(args.config, args.model, args.data, args.steps), end="")
    elif args.command == "collect":
        lengths = json.loads((args.data / "lengths.json").read_text())
        print(json.dumps(collect(args.run, args.config, args.wall, args.model, lengths, args.log)))
    else:
        results = [json.loads(line) for line in args.results.read_text().splitlines() if line]
        export = (
            json.loads(args.export.read_text()) if args.export and args.export.is_file() else None
        )
        info = json.loads(args.info.read_text()) if args.info and args.info.is_file() else {}
        print(render(results, export, info), end="")


if __name__ == "__main__":
    main()
