"""`lora.use_gradient_checkpointing: auto`: the fastest checkpointing that fits the GPU.

Unsloth offers two: `true` recomputes each layer in the backward pass from its input, kept on
the GPU; `"unsloth"` also moves those inputs to host memory and back, which saves their GPU
memory and costs host copies the step must wait for (13% of a 1.7B step, 7% of a 14B one on an
H200: `benchmarks/results/train_throughput.md`, `seed_scale.md`). `auto` recomputes when the
kept inputs and one layer's working set fit in what the loaded model left free, with a margin,
and offloads otherwise. The estimate is deliberately simple (bf16 activations, the widest
micro-batch); it only has to be right about which side of the GPU's memory it falls on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30
# Part of the free memory the estimate may use: the allocator's fragmentation, the optimizer's
# first step and the loss's chunks take the rest.
HEADROOM = 0.8
BYTES = 2  # bf16/fp16 activations


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
    setting: bool | str, activations: Activations, free_bytes: int
) -> CheckpointingChoice:
    """Resolve `auto`; any other setting is the user's and is kept as written."""
    if setting != "auto":
        return CheckpointingChoice(setting, "as the recipe sets it")
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
