"""Real vLLM behind the gateway, on a GPU: per-mode defaults reach vLLM, a client's sampling
wins, enable_thinking switches vLLM's qwen3 reasoning parser, an adapter served unmerged answers
like the merged model, errors are OpenAI-shaped, SIGTERM leaves no process.

The gateway is `tuneserve serve` started by `benchmarks/gpu/run.sh vllm_serve` (one vLLM start,
~5 min, shared with the GPU benchmarks) on a Qwen3-0.6B-shaped model fine-tuned there with the
unsloth backend:

    tuned=RUN/merged16  base=BASE  --lora tuned-lora=RUN/adapter  --engine-arg=--enable-log-requests

It tells these tests where through TUNESERVE_VLLM_GATEWAY (base URL), TUNESERVE_VLLM_KEY,
TUNESERVE_VLLM_LOGS (the engines' logs: vLLM's request log shows the sampling it received) and
TUNESERVE_VLLM_SERVE_PID (for the SIGTERM test, which runs last). Elsewhere they are skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.process_tree import alive, descendants
from toolkit.core.modes import SAMPLING

GATEWAY = os.environ.get("TUNESERVE_VLLM_GATEWAY")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not GATEWAY,
        reason="needs real vLLM on a CUDA GPU: run `bash benchmarks/gpu/run.sh vllm_setup "
        "vllm_models vllm_serve` on the GPU machine (benchmarks/gpu/README.md)",
    ),
]
KEY = os.environ.get("TUNESERVE_VLLM_KEY", "")
LOGS = Path(os.environ.get("TUNESERVE_VLLM_LOGS", "."))
HI = [{"role": "user", "content": "What is the capital of France?"}]
# vLLM's min_tokens: this barely trained model may otherwise end at once with <|im_end|>
AT_LEAST = {"min_tokens": 16}
PROMPTS = ["Name a primary color.", "What is 2+2?", "Say hello.", "What do bees make?"]


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=GATEWAY, api_key=KEY, max_retries=0, timeout=120)


def engine_saw(model_log: str, seed: int) -> str:
    """vLLM's own log line for the request sent with `seed` (each test picks a unique one)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in (LOGS / f"{model_log}.log").read_text(errors="replace").splitlines():
            if "Received request" in line and f"seed={seed}," in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"no request with seed={seed} in {LOGS / model_log}.log")


def sampled(line: str) -> dict[str, float]:
    return {
        k: float(v) for k, v in re.findall(r"\b(temperature|top_p|top_k|min_p)=([-\d.]+)", line)
    }


def test_the_gateway_lists_every_model_and_alias(client):
    listed = {model.id for model in client.models.list()}
    assert {"base", "tuned", "tuned-lora", "tuned:thinking", "tuned:chat"} <= listed


@pytest.mark.parametrize(
    ("model", "kwargs", "mode", "seed"),
    [
        ("tuned", {}, "thinking", 9101),
        (
            "tuned",
            {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}},
            "chat",
            9102,
        ),
        ("tuned:chat", {}, "chat", 9103),
    ],
)
def test_mode_defaults_reach_vllm(client, model, kwargs, mode, seed):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=HI, max_tokens=8, seed=seed, **kwargs
    )
    assert raw.headers["x-tuneserve-mode"] == mode
    want = SAMPLING[mode]
    got = sampled(engine_saw("tuned", seed))
    assert got["temperature"] == want.temperature
    assert got["top_p"] == want.top_p
    assert got["top_k"] == want.top_k


def test_a_clients_own_sampling_wins_and_the_rest_is_filled(client):
    raw = client.chat.completions.with_raw_response.create(
        model="tuned", messages=HI, max_tokens=8, seed=9104, temperature=0.2, top_p=0.5
    )
    assert "temperature=0.2" in raw.headers["x-tuneserve-sampling"]
    got = sampled(engine_saw("tuned", 9104))
    assert (got["temperature"], got["top_p"]) == (0.2, 0.5)
    assert got["top_k"] == SAMPLING["thinking"].top_k  # unset by the client: the mode's


def test_thinking_arrives_as_reasoning_under_both_names(client):
    message = (
        client.chat.completions.create(
            model="tuned", messages=HI, max_tokens=24, seed=1, extra_body=AT_LEAST
        )
        .choices[0]
        .message
    )
    # Thinking on: the parser holds everything before </think> as reasoning; this model, trained
    # a few steps from random weights, never closes it.
    assert message.reasoning_content and message.reasoning_content == message.reasoning
    assert "<think>" not in (message.content or "")


@pytest.mark.parametrize(
    "how",
    [
        {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}, **AT_LEAST}},
        {
            "messages": [{"role": "user", "content": "What is the capital of France? /no_think"}],
            "extra_body": AT_LEAST,
        },
        {"model": "tuned:chat", "extra_body": AT_LEAST},
    ],
)
def test_thinking_off_really_suppresses_thinking(client, how):
    request = {"model": "tuned", "messages": HI, "max_tokens": 24, "seed": 2, **how}
    message = client.chat.completions.create(**request).choices[0].message
    assert not message.reasoning_content and not getattr(message, "reasoning", None)
    assert message.content


def test_streaming_splits_reasoning_and_reports_usage(client):
    stream = client.chat.completions.create(
        model="tuned",
        messages=HI,
        max_tokens=24,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": 24},
    )
    reasoning, content, usage = [], [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
            content.append(delta.content or "")
            assert getattr(delta, "reasoning", None) == getattr(delta, "reasoning_content", None)
    assert "".join(reasoning) and "<think>" not in "".join(content)
    assert usage is not None and usage.completion_tokens == 24


def _first_token(client, model: str, prompt: str) -> dict[str, float]:
    reply = client.chat.completions.create(
        model=f"{model}:chat",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=1,
        temperature=0.0,
        logprobs=True,
        top_logprobs=5,
    )
    return {t.token: t.logprob for t in reply.choices[0].logprobs.content[0].top_logprobs}


def _gap(one: dict[str, float], other: dict[str, float]) -> float:
    """How far apart two top-5 next-token distributions are (inf when they share < 3)."""
    shared = one.keys() & other.keys()
    if len(shared) < 3:
        return float("inf")
    return max(abs(one[token] - other[token]) for token in shared)


def test_the_adapter_served_unmerged_answers_like_the_merged_model(client):
    merged_vs_adapter, merged_vs_base = [], []
    for prompt in PROMPTS:
        merged = _first_token(client, "tuned", prompt)
        merged_vs_adapter.append(_gap(merged, _first_token(client, "tuned-lora", prompt)))
        merged_vs_base.append(_gap(merged, _first_token(client, "base", prompt)))
    print(f"top-5 logprob gap, merged vs adapter: {merged_vs_adapter}; vs base: {merged_vs_base}")
    assert max(merged_vs_adapter) < 0.25  # bf16 merge vs bf16 LoRA kernels: rounding only
    assert min(merged_vs_base) > 3 * max(merged_vs_adapter)  # and the adapter is what does it
    line = engine_saw("base", _seeded(client, "tuned-lora", 9105))
    assert "lora_name='tuned-lora'" in line or "tuned-lora" in line.split("lora_request:")[1]


def _seeded(client, model: str, seed: int) -> int:
    client.chat.completions.create(model=model, messages=HI, max_tokens=2, seed=seed)
    return seed


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"model": "tuned", "messages": HI}, 401),  # no key
        ({"Authorization": "Bearer wrong"}, {"model": "tuned", "messages": HI}, 401),
        (None, {"model": "nope", "messages": HI}, 404),
        (None, b"{not json", 400),
        (None, {"model": "tuned", "messages": HI, "max_tokens": 10**7}, 400),  # vLLM's own 400
    ],
)
def test_errors_come_back_openai_shaped(headers, body, status):
    headers = {"Authorization": f"Bearer {KEY}"} if headers is None else headers
    send = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{GATEWAY}/chat/completions", headers=headers, timeout=60, **send)
    assert response.status_code == status
    error = response.json()["error"]
    assert isinstance(error, dict) and error["message"] and "type" in error


def test_sigterm_stops_gateway_and_every_engine():
    """Runs last (the file's last test): it ends the shared server."""
    pid = int(os.environ["TUNESERVE_VLLM_SERVE_PID"])
    below = descendants(pid)
    assert below, "tuneserve serve should have engine processes below it"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (alive(pid) or any(alive(p) for p in below)):
        time.sleep(0.5)
    left = [p for p in below if alive(p)]
    names = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left if alive(p)}
    assert not alive(pid) and not left, f"still running after SIGTERM: {json.dumps(str(names))}"
