"""One training session: tokenize with response masks, run TRL's SFTTrainer, save the adapter."""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.artifacts import atomic_dir
from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import Recipe
from toolkit.train.backend_choice import cuda_available
from toolkit.train.hf_loader import load_hf
from toolkit.train.parallel import ParallelPlan
from toolkit.train.speed_notes import packing_note
from toolkit.train.templates import NAMED_TEMPLATES, tokenize_masked, training_template
from toolkit.train.unsloth_loader import load_unsloth


@dataclass
class SessionOutcome:
    steps: int
    final_loss: float
    interrupted: bool


def load_model(recipe: Recipe, backend: str, model_path: Path) -> tuple[Any, Any]:
    if backend == "unsloth":
        return load_unsloth(recipe, model_path)
    return load_hf(recipe, model_path, cuda_available())


def tokenize(recipe: Recipe, tokenizer: Any, rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    try:
        template = training_template(tokenizer, recipe.model.chat_template)
    except ValueError as exc:
        raise TuneserveError(str(exc), "set model.chat_template in the recipe") from None
    encoded = []
    for index, row in enumerate(rows):
        try:
            encoded.append(
                tokenize_masked(
                    tokenizer,
                    template,
                    row["messages"],
                    row["mode"],
                    recipe.model.max_seq_length,
                    recipe.data.train_on_responses_only,
                    row.get("tools"),
                )
            )
        except ValueError as exc:
            raise TuneserveError(f"training row {index}: {exc}") from None
    usable = [e for e in encoded if any(label != -100 for label in e["labels"])]
    if not usable:
        raise TuneserveError(
            "every training row was truncated before its answer",
            "raise model.max_seq_length or shorten the prompts",
        )
    return Dataset.from_list(usable)


def precision(recipe: Recipe, cuda: bool) -> tuple[bool, bool]:
    """bf16/fp16 from the recipe, with auto meaning: bf16 where supported, fp16 on older GPUs."""
    import torch

    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    bf16 = bf16_ok if recipe.train.bf16 == "auto" else bool(recipe.train.bf16)
    fp16 = (cuda and not bf16_ok) if recipe.train.fp16 == "auto" else bool(recipe.train.fp16)
    if not cuda and (bf16 or fp16):
        raise TuneserveError(
            "train.bf16/fp16 mixed precision needs a GPU", "leave train.bf16 and train.fp16 on auto"
        )
    return bf16, fp16 and not bf16


def optimizer(recipe: Recipe, cuda: bool, echo: Any) -> str:
    import importlib.util

    name = recipe.train.optim
    needs_bnb = "8bit" in name or name.startswith("paged_")
    if needs_bnb and not (cuda and importlib.util.find_spec("bitsandbytes")):
        echo(f"warning: train.optim {name} needs bitsandbytes on a GPU; using adamw_torch instead")
        return "adamw_torch"
    return name


def parallel_options(plan: ParallelPlan, cuda: bool) -> dict[str, Any]:
    """TrainingArguments for a torchrun rank: the process-group backend and DDP/FSDP knobs."""
    if not plan.distributed:
        return {}
    options: dict[str, Any] = {
        "ddp_backend": "nccl" if cuda else "gloo",
        # LoRA uses every trainable parameter each step: skip DDP's per-step unused search
        "ddp_find_unused_parameters": False,
        # reentrant checkpointing re-runs hooks DDP counts once ("marked ready twice")
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }
    if plan.fsdp:
        options["fsdp"] = "full_shard auto_wrap"
        # frozen base weights and trainable LoRA weights share FSDP's flat parameters
        options["fsdp_config"] = {"use_orig_params": True, "sync_module_states": True}
    return options


def sft_config(
    recipe: Recipe,
    backend: str,
    folder: Path,
    cuda: bool,
    echo: Any,
    plan: ParallelPlan | None = None,
) -> Any:
    from trl import SFTConfig

    train = recipe.train
    plan = plan or ParallelPlan(
        1, train.per_device_train_batch_size, train.gradient_accumulation_steps
    )
    bf16, fp16 = precision(recipe, cuda)
    steps = {"max_steps": train.max_steps} if train.max_steps else {}
    config = SFTConfig(
        output_dir=str(folder / "checkpoints"),
        per_device_train_batch_size=plan.per_device,
        gradient_accumulation_steps=plan.accumulation,
        warmup_steps=train.warmup_steps,
        num_train_epochs=train.num_train_epochs or 1.0,
        learning_rate=train.learning_rate,
        logging_steps=train.logging_steps,
        optim=optimizer(recipe, cuda, echo),
        weight_decay=train.weight_decay,
        lr_scheduler_type=train.lr_scheduler_type,
        seed=train.seed,
        data_seed=train.seed,
        save_strategy="steps",
        save_steps=train.save_steps,
        bf16=bf16,
        fp16=fp16,
        max_grad_norm=train.max_grad_norm,
        # Unsloth applies its own (offloaded) checkpointing in get_peft_model; TRL must not add more.
        gradient_checkpointing=bool(recipe.lora.use_gradient_checkpointing)
        and backend != "unsloth",
        max_length=recipe.model.max_seq_length,
        packing=train.packing,
        report_to="none",
        use_cpu=not cuda,
        dataloader_num_workers=0,
        # padding is not training: tokens/s in metrics.jsonl counts real tokens only
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        save_only_model=False,
        **steps,
        **parallel_options(plan, cuda),
    )
    if cuda and not plan.distributed:
        one_gpu_per_process(config)
    return config


def one_gpu_per_process(config: Any) -> None:
    """Keep a single-process run on the one GPU the model was loaded on.

    With several GPUs visible, Trainer wraps the model in nn.DataParallel, which SFTTrainer
    refuses (seen on a 2-GPU machine); several GPUs are what `--nproc N` is for.
    """
    _ = config.device  # resolves the device and sets _n_gpu to every visible GPU
    config._n_gpu = 1


def trainer_class() -> Any:
    """TRL's SFTTrainer, or a subclass using the model's own loss where Triton is missing.

    TRL 1.15 computes the SFT loss with a Triton kernel and fails outright without Triton (CPU
    builds of torch); the model's own cross-entropy gives the same loss there.
    """
    from transformers import Trainer
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", True) is not None:
        return SFTTrainer

    class SFTTrainerWithoutTriton(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            return Trainer.compute_loss(
                self,
                model,
                inputs,
                return_outputs=return_outputs,
                num_items_in_batch=num_items_in_batch,
            )

    return SFTTrainerWithoutTriton


def say_packing_note(recipe: Recipe, dataset: Any) -> None:
    """Rank 0 says when short rows leave each step small (the launcher has not tokenized)."""
    import os

    note = packing_note(recipe, [len(ids) for ids in dataset["input_ids"]])
    if note and os.environ.get("RANK", "0") == "0":
        print(f"note: {note}", flush=True)


def run_session(
    recipe: Recipe,
    backend: str,
    model_path: Path,
    rows: list[dict[str, Any]],
    folder: Path,
    resume_from: Path | None,
    progress: bool,
    echo: Any,
    plan: ParallelPlan | None = None,
) -> SessionOutcome:
    """Train in this process; under torchrun (`plan.distributed`) every rank runs this and only
    rank 0 writes metrics, loss.png and the adapter (checkpoints: rank 0 the model, each rank
    its RNG state, as the Trainer does)."""
    from toolkit.train.metrics import (
        MetricsCallback,
        ProgressCallback,
        StopOnSignal,
        plot_loss,
        read_metrics,
    )

    model, tokenizer = load_model(recipe, backend, model_path)
    serving_template = tokenizer.chat_template
    dataset = tokenize(recipe, tokenizer, rows)
    say_packing_note(recipe, dataset)
    cuda = cuda_available()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = sft_config(recipe, backend, folder, cuda, echo, plan)
    stopper = StopOnSignal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class()(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[
                MetricsCallback(folder / "metrics.jsonl"),
                ProgressCallback(progress),
                stopper,
            ],
        )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace it
    previous = install_stop_handlers(stopper)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    main = trainer.is_world_process_zero()
    metrics = read_metrics(folder / "metrics.jsonl")
    if metrics and main:
        plot_loss(metrics, folder / "loss.png")
    steps = trainer.state.global_step
    final_loss = metrics[-1]["loss"] if metrics else float("nan")
    if stopper.requested:
        return SessionOutcome(steps, final_loss, True)
    if serving_template is None and recipe.model.chat_template != "auto":
        serving_template = NAMED_TEMPLATES[recipe.model.chat_template]
    tokenizer.chat_template = serving_template
    save_adapter(trainer, tokenizer, folder / "adapter", main)
    return SessionOutcome(steps, final_loss, False)


def save_adapter(trainer: Any, tokenizer: Any, target: Path, main: bool) -> None:
    """Rank 0 writes the adapter; under FSDP every rank takes part in gathering its weights."""
    import contextlib

    if not trainer.is_fsdp_enabled:
        if main:
            with atomic_dir(target) as tmp:
                trainer.model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
        return
    folder = atomic_dir(target) if main else contextlib.nullcontext(target.parent / ".unused")
    with folder as tmp:
        trainer.save_model(str(tmp))  # collective; writes only where args.should_save
        if main:
            tokenizer.save_pretrained(tmp)


def install_stop_handlers(stopper: Any) -> dict[int, Any]:
    """SIGINT/SIGTERM ask the trainer to checkpoint and stop instead of dying mid-step."""

    def request(signum: int, frame: Any) -> None:
        stopper.requested = True

    return {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
