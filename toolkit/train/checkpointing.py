"""`lora.use_gradient_checkpointing: auto`: the fastest checkpointing that fits the GPU.

Unsloth offers two: `true` recomputes each layer in the backward pass from its input, kept on
the GPU; `"unsloth"` also moves those inputs to host memory and back (double-buffered, behind
the next layer's compute), which saves their GPU memory. Whether the copies cost time depends
on how much compute they hide behind, which grows with the hidden size. Measured on an H200
(`benchmarks/results/train_throughput.md`, `seed_scale.md`):
- hidden 2048 (Qwen3-1.7B): recompute 22,300 tokens/s vs offload 19,108 (copies 13% of a step);
- hidden 5120 (Qwen3-14B, seed 004): offload 5,543 vs recompute 5,451 packed, 2,742 vs 2,657
  unpacked, and 2.8 GiB less memory: the copies are hidden.
So `auto` offloads from hidden 4096 up (Qwen3-8B, between the two, not measured: the copies
shrink relative to the compute as the width grows, and the memory is saved either way), and
below that recomputes when the kept inputs and one layer's working set fit in what the loaded
model left free, with a margin. The estimate is deliberately simple (bf16 activations, the
widest micro-batch); it only has to be right about which side of the GPU's memory it falls on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30
# Part of the free memory the estimate may use: the allocator's fragmentation, the optimizer's
# first step and the loss's chunks take the rest.
HEADROOM = 0.8
BYTES = 2  # bf16/fp16 activations
OFFLOAD_HIDES_FROM_HIDDEN = 4096


@dataclass(frozen=True)
class Activations:
    """What recomputation keeps on the GPU for one micro-batch, in bytes."""

    kept: int  # every layer's input, saved for the backward pass
    working: int  # one layer's forward + backward intermediates, live at the peak

    @property
    def total(self) -> int:
        return self.kept + self.working


def activation_bytes(config: Any, micro_batch: int, seq_len: int) -> Activations:
    """The checkpointed inputs (layers x tokens x hidden) and one decoder layer's live set:
    the MLP's gate, up and product at the intermediate width, forward and backward, plus the
    attention block's q/k/v/output at the hidden width."""
    tokens = micro_batch * seq_len
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    kept = config.num_hidden_layers * tokens * hidden * BYTES
    working = tokens * (6 * intermediate + 8 * hidden) * BYTES
    return Activations(kept, working)


@dataclass(frozen=True)
class CheckpointingChoice:
    value: bool | str  # what get_peft_model receives: True or "unsloth"
    reason: str


def choose_checkpointing(
    setting: bool | str, activations: Activations, free_bytes: int, hidden_size: int
) -> CheckpointingChoice:
    """Resolve `auto`; any other setting is the user's and is kept as written."""
    if setting != "auto":
        return CheckpointingChoice(setting, "as the recipe sets it")
    if hidden_size >= OFFLOAD_HIDES_FROM_HIDDEN:
        return CheckpointingChoice(
            "unsloth",
            f"offload to host memory: at hidden size {hidden_size} the copies hide behind the "
            f"compute, and ~{activations.kept / GIB:.1f} GiB stay off the GPU",
        )
    need, room = activations.total / GIB, free_bytes * HEADROOM / GIB
    if activations.total <= free_bytes * HEADROOM:
        return CheckpointingChoice(
            True, f"recompute: activations ~{need:.1f} GiB fit in {room:.1f} GiB free"
        )
    return CheckpointingChoice(
        "unsloth",
        f"offload to host memory: activations ~{need:.1f} GiB exceed {room:.1f} GiB free",
    )


def free_gpu_bytes() -> int:
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)
