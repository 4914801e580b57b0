"""Data-parallel layout of a run: how many processes, and the per-process batch that keeps the
recipe's global batch (per device x accumulation x processes) equal to the one-process run's."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import TrainSection


@dataclass(frozen=True)
class ParallelPlan:
    world_size: int
    per_device: int
    accumulation: int
    fsdp: bool = False

    @property
    def global_batch(self) -> int:
        return self.per_device * self.accumulation * self.world_size

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        how = "FSDP" if self.fsdp else ("DDP" if self.distributed else "one process")
        return (
            f"{self.per_device} per device x {self.accumulation} accumulation x "
            f"{self.world_size} process{'es' if self.world_size > 1 else ''} = "
            f"{self.global_batch} rows per step ({how})"
        )


def plan_parallel(train: TrainSection, backend: str, gpus: int | None) -> ParallelPlan:
    """The layout for `train.nproc` processes; `gpus` is the CUDA device count (None on CPU).

    Each optimizer step must see the same rows as with one process, so the accumulation is
    divided by the process count; a count that does not divide it is an error naming the fix.
    """
    nproc, accumulation = train.nproc, train.gradient_accumulation_steps
    if nproc == 1:
        if train.fsdp:
            raise TuneserveError(
                "train.fsdp shards the model across processes, and train.nproc is 1",
                "set train.nproc (or --nproc) to the number of GPUs, or train.fsdp: false",
            )
        return ParallelPlan(1, train.per_device_train_batch_size, accumulation)
    if backend == "unsloth":
        raise TuneserveError(
            f"--nproc {nproc}: the installed unsloth trains on one GPU only",
            "use --backend hf for multi-GPU training (same recipe, DDP through torchrun)",
        )
    if gpus is not None and nproc > gpus:
        raise TuneserveError(
            f"train.nproc is {nproc} but this machine has {gpus} CUDA GPU(s)",
            f"set train.nproc (or --nproc) to at most {gpus}: one process per GPU",
        )
    if train.fsdp and gpus is None:
        raise TuneserveError(
            "train.fsdp needs CUDA GPUs; this machine has none",
            "set train.fsdp: false (DDP over gloo works on CPU)",
        )
    if accumulation % nproc:
        global_batch = train.per_device_train_batch_size * accumulation
        raise TuneserveError(
            f"train.gradient_accumulation_steps {accumulation} is not divisible by "
            f"train.nproc {nproc}, so {nproc} processes cannot keep the global batch of "
            f"{global_batch} rows",
            f"set train.gradient_accumulation_steps to a multiple of {nproc} "
            f"(e.g. {accumulation + nproc - accumulation % nproc}), or choose --nproc dividing "
            f"{accumulation}",
        )
    return ParallelPlan(
        nproc, train.per_device_train_batch_size, accumulation // nproc, fsdp=train.fsdp
    )
