"""enable_thinking, /no_think and aliases really switch thinking on the tiny Qwen3-shaped model.

Its weights are random, so a logit bias on the `<think>` token makes it "think" on demand: with
thinking on, that output is reasoning; with thinking off, the prompt already holds an empty
think block and nothing of the output is taken for reasoning.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY
from toolkit.core.modes import SAMPLING

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "What is 2+2?"}]
EMPTY_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def think_bias(qwen3_gguf) -> dict[str, int]:
    from gguf import GGUFReader

    tokens = GGUFReader(str(qwen3_gguf)).fields["tokenizer.ggml.tokens"]
    index = [tokens.contents(i) for i in range(len(tokens.data))].index("<think>")
    return {str(index): 100}


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0)


def rendered_prompt(gateway, body: dict) -> str:
    """The prompt the engine ran: rendered by the gateway (llama-cpp-python), or by a native
    llama-server from the messages and chat_template_kwargs it received."""
    if "prompt" in body:
        return body["prompt"]
    engine = gateway.recorder.targets["qwen"]
    fields = {"messages": body["messages"], "chat_template_kwargs": body["chat_template_kwargs"]}
    # the engine answers only its gateway: send the key the gateway sends it
    key = {"Authorization": f"Bearer {gateway.gateway.routes['qwen'].upstream_key}"}
    answer = httpx.post(f"{engine}/apply-template", json=fields, headers=key, timeout=30)
    return answer.json()["prompt"]


def test_thinking_by_default_for_a_qwen3_template(gateway, client, engine_bodies, think_bias):
    raw = client.chat.completions.with_raw_response.create(
        model="qwen", messages=HI, max_tokens=6, logit_bias=think_bias
    )
    assert raw.headers["x-tuneserve-mode"] == "thinking"
    prompt = rendered_prompt(gateway, engine_bodies[-1])
    assert prompt.endswith("<|im_start|>assistant\n") and "</think>" not in prompt
    assert engine_bodies[-1]["temperature"] == SAMPLING["thinking"].temperature
    message = raw.parse().choices[0].message
    assert message.reasoning_content == message.reasoning
    assert message.reasoning  # the forced <think> output went to reasoning
    assert "<think>" not in (message.content or "")


@pytest.mark.parametrize(
    ("request_fields", "messages"),
    [
        ({"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}, HI),
        ({}, [{"role": "user", "content": "What is 2+2? /no_think"}]),
        ({"model": "qwen:chat"}, HI),
    ],
    ids=["enable_thinking_false", "no_think_tag", "chat_alias"],
)
def test_thinking_off_really_turns_it_off(
    gateway, client, engine_bodies, think_bias, request_fields, messages
):
    fields = {"model": "qwen", **request_fields}
    raw = client.chat.completions.with_raw_response.create(
        messages=messages, max_tokens=6, logit_bias=think_bias, **fields
    )
    assert raw.headers["x-tuneserve-mode"] == "chat"
    assert rendered_prompt(gateway, engine_bodies[-1]).endswith(EMPTY_THINK)
    assert engine_bodies[-1]["temperature"] == SAMPLING["chat"].temperature
    message = raw.parse().choices[0].message
    assert message.reasoning is None and message.reasoning_content is None
    assert message.content.startswith("<think>")  # generated text stays the answer


def test_enable_thinking_true_wins_over_the_chat_alias(gateway, client, engine_bodies):
    raw = client.chat.completions.with_raw_response.create(
        model="qwen:chat",
        messages=HI,
        max_tokens=2,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    assert raw.headers["x-tuneserve-mode"] == "thinking"
    assert "</think>" not in rendered_prompt(gateway, engine_bodies[-1])


def test_streamed_reasoning_arrives_under_both_names(client, think_bias):
    stream = client.chat.completions.create(
        model="qwen", messages=HI, max_tokens=6, logit_bias=think_bias, stream=True
    )
    deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    reasoning = "".join(getattr(d, "reasoning", None) or "" for d in deltas)
    assert reasoning
    assert reasoning == "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert deltas[0].role == "assistant"
