"""Replay (self-distillation): general prompts answered by the base model itself, mixed into
the training rows so the tuned model keeps answering such prompts as the base did.

The answers come from the base served behind any OpenAI-compatible endpoint (a `base_url` and
a model name: llama.cpp on CPU, vLLM on a GPU), greedily, once: they are cached under the
models folder by the base model's hash, the prompts and the decoding, so every later run on
the same base reuses them. The bundled prompt pool covers the kinds the guard suite checks
(arithmetic, facts, instruction following, yes/no, multiple choice, JSON) with none of its
items (tests/toolkit/test_replay.py checks the text, not only the ids).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.artifacts import atomic_write_text, base_models_dir, sha256_text
from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import ReplaySection

BUILTIN_POOL = Path(__file__).with_name("replay_prompts.jsonl")
Messages = list[dict[str, str]]


@dataclass
class Endpoint:
    """Where the base model answers: an OpenAI-compatible URL and the served model's name."""

    base_url: str
    model: str
    api_key: str | None = None


def load_prompts(spec: str) -> list[Messages]:
    """`builtin` (the bundled pool) or a JSONL file of {"messages": [...]} or {"prompt": "..."}
    lines; each prompt ends with a user turn, which the base answers."""
    path = BUILTIN_POOL if spec == "builtin" else Path(spec)
    if not path.is_file():
        raise TuneserveError(
            f"data.replay.prompts: {path} does not exist",
            'use `builtin` or a .jsonl file of {"prompt": ...} lines',
        )
    prompts: list[Messages] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = (
                row["messages"]
                if "messages" in row
                else [{"role": "user", "content": row["prompt"]}]
            )
            if messages[-1]["role"] != "user" or not isinstance(messages[-1]["content"], str):
                raise ValueError("the last message must be a user turn with text content")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise TuneserveError(
                f"{path}:{number}: not a replay prompt ({exc})",
                'write one {"prompt": "..."} or {"messages": [...]} object per line',
            ) from None
        prompts.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not prompts:
        raise TuneserveError(
            f"{path} has no prompts", "add prompts or use data.replay.prompts: builtin"
        )
    return prompts


def cache_file(base_identity: str, prompts: list[Messages], replay: ReplaySection) -> Path:
    """Answers depend on the base, the prompts and the decoding; nothing else."""
    key = sha256_text(json.dumps([base_identity, prompts, replay.max_tokens], sort_keys=True))[:24]
    return base_models_dir() / "replay" / f"{key}.jsonl"


async def _answer_all(
    prompts: list[Messages], endpoint: Endpoint, max_tokens: int, concurrency: int
) -> list[dict[str, Any] | None]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key or "none", max_retries=4, timeout=300
    )
    gate = asyncio.Semaphore(concurrency)

    async def answer(messages: Messages) -> dict[str, Any] | None:
        async with gate:
            reply = await client.chat.completions.create(
                model=endpoint.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=0.0,  # the base's most likely answer, the same on every run
                seed=0,
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
            )
        choice = reply.choices[0]
        text = (choice.message.content or "").strip()
        # An answer cut at max_tokens would teach the model to stop mid-sentence.
        if not text or choice.finish_reason == "length":
            return None
        return {"messages": [*messages, {"role": "assistant", "content": text}], "mode": "chat"}

    try:
        return await asyncio.gather(*(answer(p) for p in prompts))
    finally:
        await client.close()


def generate_replay(
    prompts: list[Messages], endpoint: Endpoint, max_tokens: int, concurrency: int = 4
) -> list[dict[str, Any]]:
    """The base's greedy answer to every prompt, as chat training rows (cut answers dropped)."""
    import openai

    try:
        answered = asyncio.run(_answer_all(prompts, endpoint, max_tokens, concurrency))
    except openai.APIError as exc:
        raise TuneserveError(
            f"replay: the base model at {endpoint.base_url} did not answer ({exc})",
            "check that the endpoint serves the base model under that name",
        ) from None
    return [row for row in answered if row is not None]


def ensure_replay(
    replay: ReplaySection,
    base_identity: str,
    serve_base: Callable[[], Any],
    echo: Callable[[str], None] = print,
) -> Path:
    """The cached replay rows for this base, generated first when missing.

    `serve_base()` is a context manager yielding an `Endpoint`; it is entered only on a miss,
    so a cached pool costs no engine start.
    """
    prompts = load_prompts(replay.prompts)
    target = cache_file(base_identity, prompts, replay)
    if target.is_file():
        return target
    echo(f"replay: the base answers {len(prompts)} prompts (once; cached in {target.parent})")
    with serve_base() as endpoint:
        rows = generate_replay(prompts, endpoint, replay.max_tokens)
    if not rows:
        raise TuneserveError(
            "replay: the base gave no usable answer (all empty or cut at max_tokens)",
            "raise data.replay.max_tokens",
        )
    echo(f"replay: {len(rows)} answers kept, {len(prompts) - len(rows)} cut at max_tokens dropped")
    atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return target


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def add_replay(train: list[dict[str, Any]], replay: ReplaySection, path: Path, seed: int) -> int:
    """Mix the run's replay rows (`path`, made by toolkit.pipeline.forgetting.prepare_replay) into
    `train` in place; returns how many were added."""
    if not path.is_file():
        raise TuneserveError(
            f"data.replay.ratio is {replay.ratio} but {path} was not generated",
            "train through `tuneserve train` or `tuneserve run`, which generate it first",
        )
    mixed = mix_replay(train, read_rows(path), replay.ratio, seed)
    added = len(mixed) - len(train)
    train[:] = mixed
    return added


def replay_count(train_rows: int, ratio: float) -> int:
    """Replay rows that make `ratio` of the mixed set (0.25 with 200 task rows: 67)."""
    return round(train_rows * ratio / (1 - ratio)) if ratio > 0 else 0


def mix_replay(
    train: list[dict[str, Any]], replay: list[dict[str, Any]], ratio: float, seed: int
) -> list[dict[str, Any]]:
    """The task rows with replay rows making `ratio` of the result (repeated when the pool is
    smaller than that), shuffled."""
    count = replay_count(len(train), ratio)
    if not count or not replay:
        return list(train)
    rng = random.Random(seed)
    whole, part = divmod(count, len(replay))
    taken = replay * whole + rng.sample(replay, part)
    mixed = list(train) + taken
    rng.shuffle(mixed)
    return mixed


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in {"a", "an", "the"}]


def same_prompt(one: str, other: str) -> bool:
    """Whether two prompts ask the same thing: the same words in any order ("15 + 18" and
    "18 + 15", any case or punctuation), or one holding the other whole (a guard item wrapped
    in more text). Templated prompts that differ in their subject ("a baby cat", "a baby dog")
    are different items."""
    first, second = _words(one), _words(other)
    if set(first) == set(second):
        return True
    short, long = sorted((" ".join(first), " ".join(second)), key=len)
    return bool(short) and f" {short} " in f" {long} "


def leaks(prompts: list[str], guarded: list[str]) -> list[tuple[str, str]]:
    """Every (prompt, guarded item) pair that asks the same thing."""
    return [(p, g) for p in prompts for g in guarded if same_prompt(p, g)]
