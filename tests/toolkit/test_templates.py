"""Chat templates: thinking rendered as Qwen3 does, and loss masks on assistant replies only."""

from __future__ import annotations

import pytest

from toolkit.train.templates import CHATML, QWEN3, assistant_spans, tokenize_masked

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "3+3?"},
    {"role": "assistant", "content": "6.", "reasoning_content": "three and three"},
]


@pytest.fixture(scope="module")
def tokenizer(base_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model)
    tok.add_tokens(["<think>", "</think>"])
    return tok


def trained_text(tokenizer, encoded) -> str:
    return tokenizer.decode(
        [i for i, lab in zip(encoded["input_ids"], encoded["labels"], strict=True) if lab != -100]
    )


def prompt_text(tokenizer, encoded) -> str:
    return tokenizer.decode(
        [i for i, lab in zip(encoded["input_ids"], encoded["labels"], strict=True) if lab == -100]
    )


@pytest.mark.parametrize("template", [CHATML, QWEN3], ids=["chatml", "qwen3"])
def test_prompt_tokens_are_masked_and_replies_kept(tokenizer, template):
    encoded = tokenize_masked(tokenizer, template, CONVERSATION, "thinking", 512, True)
    assert len(encoded["input_ids"]) == len(encoded["labels"])
    trained = trained_text(tokenizer, encoded)
    masked = prompt_text(tokenizer, encoded)
    assert trained.startswith("4.<|im_end|>") and trained.endswith("6.<|im_end|>")
    for prompt_piece in ("Be brief.", "2+2?", "3+3?", "<|im_start|>user", "<|im_start|>assistant"):
        assert prompt_piece in masked and prompt_piece not in trained
    # every kept label is the token itself (no shift at this stage)
    assert all(
        lab in (-100, tid) for tid, lab in zip(encoded["input_ids"], encoded["labels"], strict=True)
    )


def test_qwen3_thinking_example_trains_on_its_reasoning(tokenizer):
    encoded = tokenize_masked(tokenizer, QWEN3, CONVERSATION, "thinking", 512, True)
    assert "<think>\nthree and three\n</think>\n\n6.<|im_end|>" in trained_text(tokenizer, encoded)


def test_qwen3_chat_example_has_an_empty_think_block_in_the_prompt(tokenizer):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    text, spans = assistant_spans(tokenizer, QWEN3, chat, "chat")
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHello.<|im_end|>\n")
    start, end = spans[0]
    assert text[start:end] == "Hello.<|im_end|>"  # the empty think block is prompt, as at inference


def test_train_on_everything_when_responses_only_is_off(tokenizer):
    encoded = tokenize_masked(tokenizer, CHATML, CONVERSATION, "chat", 512, False)
    assert encoded["labels"] == encoded["input_ids"]


def test_truncation_respects_max_length(tokenizer):
    encoded = tokenize_masked(tokenizer, CHATML, CONVERSATION, "chat", 8, True)
    assert len(encoded["input_ids"]) == 8
