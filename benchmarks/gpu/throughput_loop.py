"""The measured part of benchmarks/train_throughput.py: one backend's process, its configs in order.

Models load through the product's own backends (toolkit.train.session.load_model), then a plain
loop trains them on a seeded random token stream so both backends see the same tokens.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path
from typing import Any

VOCAB_LIMIT = 150_000  # random ids stay below Qwen3's 151,936 and clear of its added tokens


# ---------------------------------------------------------------- data: the same stream for both


def doc_lengths(rng: Any, seq: int) -> Any:
    """A long-tailed length mix: log-normal around seq/5, clipped to [seq/32, seq]."""
    while True:
        length = int(math.exp(rng.normalvariate(math.log(seq / 5), 0.9)))
        yield max(seq // 32, min(seq, length))


def batches(kind: str, batch: int, seq: int, vocab: int, seed: int = 0) -> Any:
    """Micro-batches of `kind` fixed (full rows), padded (one document a row, padded to the
    longest) or packed (documents first-fit into rows of `seq`). Yields (ids, mask, docs) where
    docs lists each row's document lengths (for the attention FLOPs)."""
    import random

    import torch

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = doc_lengths(rng, seq)
    pending: list[int] = []
    while True:
        if kind == "fixed":
            rows = [[seq] for _ in range(batch)]
        elif kind == "padded":
            rows = [[next(lengths)] for _ in range(batch)]
        else:
            rows = []
            while len(rows) < batch:
                while len(pending) < 64:
                    pending.append(next(lengths))
                row, room = [], seq
                for length in sorted(pending, reverse=True):
                    if length <= room:
                        row.append(length)
                        room -= length
                for length in row:
                    pending.remove(length)
                rows.append(row)
        width = max(sum(row) for row in rows)
        ids = torch.randint(0, min(VOCAB_LIMIT, vocab - 16), (batch, width), generator=gen)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for i, row in enumerate(rows):
            mask[i, : sum(row)] = 1
        yield ids, mask, rows


# ---------------------------------------------------------------- models through the product


def load(backend: str, path: str, four_bit: bool, checkpointing: Any) -> tuple[Any, Any]:
    from toolkit.recipe.schema import Recipe
    from toolkit.train.session import load_model

    recipe = Recipe(
        model={"name": path, "max_seq_length": 2048, "load_in_4bit": four_bit},
        lora={"r": 32, "lora_alpha": 32, "use_gradient_checkpointing": checkpointing},
    )
    model, tokenizer = load_model(recipe, backend, Path(path))
    if backend == "hf" and checkpointing:
        # What TRL's SFTTrainer does for the hf backend (gradient_checkpointing=True).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model, tokenizer


def count_params(config: Any) -> int:
    """Parameters a token's matmuls pass through: the layers and the output head."""
    d, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads, kv, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    attention = d * heads * head_dim * 2 + d * kv * head_dim * 2
    return layers * (attention + 3 * d * inter) + config.vocab_size * d


def attention_flops(config: Any, docs: list[list[int]]) -> int:
    """PaLM's 12 * layers * heads * head_dim * context per token, forward + backward; a
    document's tokens see that document only."""
    per = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim
    return per * sum(length * length for row in docs for length in row)


# ---------------------------------------------------------------- the loop


def make_optimizer(model: Any, cuda: bool) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if cuda:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=2e-4, weight_decay=0.01)
    return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)


def train_steps(
    model: Any, optimizer: Any, stream: Any, steps: int, accum: int, device: str, padded: bool
):
    """`steps` optimizer steps; returns (useful tokens, slots, documents, last loss)."""
    import torch

    tokens, slots, docs, loss_value = 0, 0, [], float("nan")
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(steps):
        for _ in range(accum):
            ids, mask, rows = next(stream)
            ids, mask = ids.to(device), mask.to(device)
            labels = ids.masked_fill(mask == 0, -100)
            # Padding is on the right, which causal attention never lets a real token see, so
            # only the padded kind passes a mask (as a padding collator would).
            out = model(input_ids=ids, attention_mask=mask if padded else None, labels=labels)
            (out.loss / accum).backward()
            loss_value = out.loss.detach()
            tokens += int(mask.sum())
            slots += ids.numel()
            docs.extend(rows)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tokens, slots, docs, float(loss_value)


def profile_step(
    model: Any, optimizer: Any, stream: Any, accum: int, padded: bool, out: Path, label: str
) -> list[dict]:
    """One optimizer step under torch.profiler; the top CUDA kernels by self time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train_steps(model, optimizer, stream, 1, accum, "cuda", padded)
        torch.cuda.synchronize()
    from torch.autograd import DeviceType

    events = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events) or 1
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40)
    (out / f"profile-{label}.txt").write_text(table)
    return [
        {
            "kernel": e.key[:90],
            "share": round(e.self_device_time_total / total, 4),
            "ms": round(e.self_device_time_total / 1000, 1),
            "calls": e.count,
        }
        for e in events[:12]
    ]


def run_config(job: dict, cfg: dict, model: Any, cuda: bool) -> dict:
    import torch

    device = "cuda" if cuda else "cpu"
    seq, accum, padded = job["seq"], cfg["accum"], cfg["data"] == "padded"
    stream = batches(cfg["data"], cfg["batch"], seq, model.config.vocab_size, seed=0)
    optimizer = make_optimizer(model, cuda)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    train_steps(model, optimizer, stream, job["warmup"], accum, device, padded)
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.monotonic() - started
    started = time.perf_counter()
    tokens, slots, docs, loss = train_steps(
        model, optimizer, stream, job["steps"], accum, device, padded
    )
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    config = model.config
    row = {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "warmup_s": round(warm_s, 1),
        "loss": round(loss, 4),
        "params": count_params(config),
        "flops": 6 * count_params(config) * tokens + attention_flops(config, docs),
        "fill": round(tokens / slots, 3),
    }
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        row["reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        if cfg["profile"]:
            row["kernels"] = profile_step(
                model,
                optimizer,
                stream,
                accum,
                padded,
                Path(job["out"]),
                f"{job['backend']}-{cfg['label']}",
            )
    del optimizer
    return row


def run_worker(job: dict) -> None:
    backend = job["backend"]
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as the backend does)
    import torch

    cuda = torch.cuda.is_available()
    results = Path(job["results"])
    current, model = None, None
    for cfg in job["configs"]:
        key = cfg["model"]
        base = {
            "backend": backend,
            "label": cfg["label"],
            "batch": cfg["batch"],
            "accum": cfg["accum"],
            "data": cfg["data"],
            "model": key,
        }
        try:
            if key != current:
                model = None
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
                started = time.monotonic()
                model, _ = load(
                    backend, job["models"][key], key.endswith("-4"), cfg["checkpointing"]
                )
                model.train()
                current = key
                print(f"[{backend}] loaded {key} in {time.monotonic() - started:.0f} s", flush=True)
            row = {**base, **run_config(job, cfg, model, cuda)}
        except torch.cuda.OutOfMemoryError as exc:
            row = {**base, "error": f"out of memory: {str(exc)[:120]}"}
        except Exception as exc:  # noqa: BLE001  (one config failing must not lose the others)
            row = {**base, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        finally:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        print(f"[{backend}] {json.dumps(row)}", flush=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
