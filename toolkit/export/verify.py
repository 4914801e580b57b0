"""Checks of each export against the model it came from; the figures go into the manifest.

merged16: max |logit| difference between the fp32 merge and base + unmerged adapter, and
greedy text of the saved 16-bit folder vs base + adapter. GGUF: perplexity through llama.cpp
over the held-out text (the training text when none is held out) vs transformers on the same
token ids, and greedy agreement.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from toolkit.core.errors import TuneserveError
from toolkit.export.merge import load_base

PROMPTS = (
    "What is the capital of France?",
    "Give the opposite of the word 'hot'.",
    "Write one sentence about the sea.",
)


def chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )


FP32_EPS = 2.0**-23  # torch.finfo(torch.float32).eps
# A correct merge computes the same function as base + unmerged adapter in another order
# (W x + s B A x vs (W + s B A) x), so their fp32 logits differ by rounding only: about eps
# relative per operation, compounding through the layers. The bound is that, relative to the
# logits' own size, with headroom: an absolute bound (1e-4 on logits of size ~30) measured the
# BLAS (1.1e-4 on a GPU, 1.4e-4 on one CPU) instead of the merge.
MERGE_ROUNDING_PER_LAYER = 32 * FP32_EPS


def merge_tolerance(num_layers: int) -> float:
    """The largest relative logit difference a correct fp32 merge may show."""
    return MERGE_ROUNDING_PER_LAYER * num_layers


def prompt_logits(model: Any, tokenizer: Any) -> list[Any]:
    """The model's fp32 logits on the check's prompts (kept, so the model itself need not be)."""
    import torch

    with torch.no_grad():
        return [
            model(torch.tensor([chat_ids(tokenizer, prompt)], device=model.device))
            .logits.float()
            .cpu()
            for prompt in PROMPTS
        ]


def largest_difference(reference: list[Any], candidate: list[Any]) -> tuple[float, float]:
    """(max |reference - candidate| logit, max |reference| logit) over the check's prompts."""
    worst = max((a - b).abs().max().item() for a, b in zip(reference, candidate, strict=True))
    return worst, max(a.abs().max().item() for a in reference)


def logit_difference(reference: Any, candidate: Any, tokenizer: Any) -> tuple[float, float]:
    """largest_difference of two models' logits on the check's prompts."""
    return largest_difference(
        prompt_logits(reference, tokenizer), prompt_logits(candidate, tokenizer)
    )


def merge_figures(difference: float, scale: float, num_layers: int) -> dict[str, Any]:
    """The fp32 merge's difference, relative to the logits' size, within what rounding through
    the model's layers allows (`merge_matches`)."""
    relative = difference / scale
    tolerance = merge_tolerance(num_layers)
    return {
        "max_abs_logit_diff_fp32": difference,
        "logit_scale": scale,
        "rel_logit_diff_fp32": relative,
        "rel_tolerance_fp32": tolerance,
        "merge_matches": relative <= tolerance,
    }


def check_merge(unmerged: Any, merged: Any, tokenizer: Any) -> dict[str, Any]:
    """An fp32 merge against base + unmerged adapter."""
    difference, scale = logit_difference(unmerged, merged, tokenizer)
    return merge_figures(difference, scale, unmerged.config.num_hidden_layers)


def greedy_texts(model: Any, tokenizer: Any, tokens: int = 16) -> list[str]:
    import torch

    texts = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([chat_ids(tokenizer, prompt)], device=model.device)
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False
            )
            texts.append(tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True).strip())
    return texts


def on_fastest_device(model: Any) -> Any:
    """The model on the GPU when its fp32 weights fit there with room to run, else where it is:
    a 14B's checks take seconds on a GPU and minutes on the CPU. fp32 matmuls stay fp32 on the
    GPU (PyTorch leaves TF32 off for them), so the same tolerance holds."""
    import torch

    if not torch.cuda.is_available():
        return model
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    free, _ = torch.cuda.mem_get_info()
    return model.to("cuda") if weights * 1.25 < free else model


def verify_merge(base: Path, adapter: Path, merged_dir: Path) -> dict[str, Any]:
    """The merge checked in fp32 against base + unmerged adapter, and the saved folder against
    both, holding one fp32 copy of the model at a time: the reference's logits and greedy text
    are kept, the adapter is then merged into that same copy, and the saved folder is loaded
    only after it is gone. (A Qwen3-14B is 59 GB in fp32: three copies at once were killed for
    memory on a 128 GiB machine, `benchmarks/results/seed_scale.md`.)"""
    import gc

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(on_fastest_device(load_base(base)), adapter)
    layers = model.config.num_hidden_layers
    reference = prompt_logits(model, tokenizer)
    reference_texts = greedy_texts(model, tokenizer)
    model = model.merge_and_unload()  # in place: the same weights, the adapter added to them
    figures = merge_figures(*largest_difference(reference, prompt_logits(model, tokenizer)), layers)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    saved = on_fastest_device(AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32))
    saved_difference, _ = largest_difference(reference, prompt_logits(saved, tokenizer))
    same_text = sum(
        a == b for a, b in zip(reference_texts, greedy_texts(saved, tokenizer), strict=True)
    )
    return {
        **figures,
        "max_abs_logit_diff_saved": saved_difference,
        "greedy_match_saved": same_text / len(PROMPTS),
    }


def perplexity_rows(folder: Path) -> tuple[list[dict[str, Any]], str]:
    """The rows the GGUF perplexity check scores, and which split they are: the held-out rows,
    else (a recipe with data.eval_split: 0) the training rows. Either way the figure compared
    is GGUF vs merged16 on the same text, so it still measures the export."""
    import json

    for split in ("heldout", "train"):
        path = folder / "data" / f"{split}.jsonl"
        text = path.read_text() if path.is_file() else ""
        rows = [json.loads(line) for line in text.splitlines() if line]
        if rows:
            return rows, split
    raise TuneserveError(
        f"{folder / 'data'} holds no held-out or training rows to check the GGUF export with",
        "retrain the run (`tuneserve train RECIPE`): it saves them",
    )


def heldout_texts(tokenizer: Any, rows: list[dict[str, Any]], limit: int = 24) -> list[list[int]]:
    sequences = []
    for row in rows[:limit]:
        messages = [
            {k: v for k, v in m.items() if k in ("role", "content")} for m in row["messages"]
        ]
        sequences.append(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
    return sequences


def hf_perplexity(model: Any, sequences: list[list[int]]) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for ids in sequences:
            tensor = torch.tensor([ids])
            logits = model(tensor).logits.float()[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits, tensor[0, 1:], reduction="sum")
            total, count = total + nll.item(), count + len(ids) - 1
    return math.exp(total / count)


def gguf_perplexity(gguf: Path, sequences: list[list[int]]) -> float:
    import numpy as np
    from llama_cpp import Llama

    longest = max(len(s) for s in sequences)
    llm = Llama(str(gguf), n_ctx=max(256, longest + 8), logits_all=True, verbose=False, n_threads=2)
    total, count = 0.0, 0
    for ids in sequences:
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total -= float(log_probs[np.arange(len(ids) - 1), ids[1:]].sum())
        count += len(ids) - 1
    llm.close()
    return math.exp(total / count)


def gguf_greedy(gguf: Path, tokenizer: Any, tokens: int = 16) -> list[str]:
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=512, verbose=False, n_threads=2)
    stops = {llm.token_eos(), tokenizer.eos_token_id}
    texts = []
    for prompt in PROMPTS:
        out = []
        for token in llm.generate(chat_ids(tokenizer, prompt), temp=0.0, top_k=1, reset=True):
            if token in stops or len(out) >= tokens:
                break
            out.append(token)
        texts.append(tokenizer.decode(out, skip_special_tokens=True).strip())
    llm.close()
    return texts


def verify_gguf(folder: Path, gguf: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = folder / "merged16"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    rows, split = perplexity_rows(folder)  # held-out text, else training text (eval_split: 0)
    sequences = heldout_texts(tokenizer, rows)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    reference_ppl = hf_perplexity(model, sequences)
    ppl = gguf_perplexity(gguf, sequences)
    reference = greedy_texts(model, tokenizer)
    greedy = gguf_greedy(gguf, tokenizer)
    return {
        "path": str(gguf),
        "size": gguf.stat().st_size,
        "ppl": round(ppl, 4),
        "ppl_merged16": round(reference_ppl, 4),
        "ppl_ratio": round(ppl / reference_ppl, 4),
        "ppl_text": split,  # which rows the perplexities are over: heldout or train
        "greedy_match": sum(a == b for a, b in zip(reference, greedy, strict=True))
        / len(reference),
    }
