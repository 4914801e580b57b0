"""Training telemetry: metrics.jsonl per logged step, a rich progress bar, and loss.png."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from toolkit.core.artifacts import atomic_write_bytes


def memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB -> GiB


class MetricsCallback(TrainerCallback):
    """Appends one JSON line per log event; each line is flushed so a crash loses at most one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last = (time.monotonic(), 0)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        # every rank logs the same (gathered) figures; only rank 0 writes them
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        now, tokens = time.monotonic(), state.num_input_tokens_seen
        last_time, last_tokens = self._last
        self._last = (now, tokens)
        record = {
            "step": state.global_step,
            "loss": logs["loss"],
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_per_second": round((tokens - last_tokens) / max(now - last_time, 1e-9), 1),
            "memory_gib": memory_gib(),
            "epoch": logs.get("epoch"),
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()


class ProgressCallback(TrainerCallback):
    """A rich progress bar with the latest loss and the ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss="-"
        )

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if self.progress is not None and logs and "loss" in logs:
            self.progress.update(self.task, loss=f"{logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class StopOnSignal(TrainerCallback):
    """Set by SIGINT/SIGTERM: save a checkpoint at the end of the current step, then stop."""

    def __init__(self) -> None:
        self.requested = False

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if args.world_size > 1:
            self.requested = any_rank(self.requested, args.device)
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def any_rank(flag: bool, device: Any) -> bool:
    """True on every rank when any rank has it: ranks must stop at the same step, or the ones
    still training would wait forever on the others' gradients."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return rows


def plot_loss(metrics: list[dict[str, Any]], out: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step = {row["step"]: row["loss"] for row in metrics}  # a resumed run re-logs steps
    steps = sorted(by_step)
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(steps, [by_step[s] for s in steps], marker="o", markersize=2)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(out, buffer.getvalue())
