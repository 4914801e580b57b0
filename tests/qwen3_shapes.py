"""Random-initialised Qwen3-shaped models built locally (no hub), for tests and benchmarks.

They reuse the embedded SmolLM2 tokenizer (the GGUF converter rejects freshly trained BPE
tokenizers) with `<think>` and `</think>` added as single tokens and Qwen3's chat template, so
thinking mode, reasoning parsers and exports behave as they do on a real Qwen3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.train.templates import QWEN3


@dataclass(frozen=True)
class Qwen3Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    vocab_size: int | None = None  # None: the tokenizer's size


SHAPES = {
    "tiny": Qwen3Shape(64, 128, 2, 4, 2, 16, True),
    "0.6b": Qwen3Shape(1024, 3072, 28, 16, 8, 128, True, 151936),
    "1.7b": Qwen3Shape(2048, 6144, 28, 16, 8, 128, True, 151936),
    "8b": Qwen3Shape(4096, 12288, 36, 32, 8, 128, False, 151936),
    "14b": Qwen3Shape(5120, 17408, 40, 40, 8, 128, False, 151936),
}


def build_qwen3(
    out: Path,
    shape: str | Qwen3Shape,
    tokenizer_source: Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """Write a random Qwen3ForCausalLM with a Qwen3-style tokenizer and template to `out`."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    dims = SHAPES[shape] if isinstance(shape, str) else shape
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    tokenizer.add_tokens(["<think>", "</think>"], special_tokens=False)
    tokenizer.chat_template = QWEN3
    tokenizer.eos_token = "<|im_end|>"
    # Qwen3 pads with <|endoftext|>; a pad equal to the end-of-turn token would be masked out
    # of the labels and teach the model never to stop (Unsloth warns and replaces it).
    tokenizer.pad_token = "<|endoftext|>"
    vocab = dims.vocab_size or len(tokenizer)
    vocab = max(vocab, len(tokenizer))
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_hidden_layers,
        num_attention_heads=dims.num_attention_heads,
        num_key_value_heads=dims.num_key_value_heads,
        head_dim=dims.head_dim,
        max_position_embeddings=4096,
        tie_word_embeddings=dims.tie_word_embeddings,
        rope_theta=1_000_000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
