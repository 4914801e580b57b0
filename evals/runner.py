"""The runner: every item through `openai.AsyncOpenAI`, bounded concurrency, retries, a disk cache.

The cache is append-only JSON Lines keyed by a hash of (model, request): an interrupted eval
resumes where it stopped and a repeated one sends nothing. Retries with backoff on 429/5xx and
connection errors are the openai client's own (max_retries).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.suite import Item, Suite


@dataclass
class Answer:
    model: str
    suite: str
    item: str
    output: str
    reasoning: str | None
    latency_s: float
    completion_tokens: int
    error: str | None = None


def request_for(item: Item, model: str, max_tokens: int, seed: int) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": model,
        "messages": item.messages,
        "max_tokens": item.max_tokens or max_tokens,
        "seed": seed,
    }
    if item.temperature is not None:
        request["temperature"] = item.temperature
    if item.mode is not None:
        request["extra_body"] = {
            "chat_template_kwargs": {"enable_thinking": item.mode == "thinking"}
        }
    return request


def cache_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                self.entries[entry["key"]] = entry["answer"]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, answer: Answer) -> None:
        self.entries[key] = asdict(answer)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"key": key, "answer": asdict(answer)}) + "\n")
            handle.flush()


async def ask(client: Any, request: dict[str, Any], model: str, suite: str, item: str) -> Answer:
    import openai

    started = time.perf_counter()
    try:
        response = await client.chat.completions.create(**request)
    except openai.APIError as exc:
        return Answer(
            model,
            suite,
            item,
            "",
            None,
            time.perf_counter() - started,
            0,
            f"{type(exc).__name__}: {exc}",
        )
    message = response.choices[0].message
    extra = message.model_extra or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    tokens = response.usage.completion_tokens if response.usage else 0
    return Answer(
        model, suite, item, message.content or "", reasoning, time.perf_counter() - started, tokens
    )


async def run_items(
    suites: list[Suite],
    models: list[str],
    *,
    base_url: str,
    api_key: str | None,
    concurrency: int,
    max_tokens: int,
    seed: int,
    timeout: float,
    cache: ResponseCache,
    progress: bool = True,
) -> list[Answer]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=4
    )
    limit = asyncio.Semaphore(concurrency)
    jobs = [(model, suite, item) for model in models for suite in suites for item in suite.items]
    answers: list[Answer | None] = [None] * len(jobs)
    bar = _progress(len(jobs), progress)

    async def one(index: int, model: str, suite: Suite, item: Item) -> None:
        request = request_for(item, model, max_tokens, seed)
        key = cache_key(request)
        cached = cache.get(key)
        if cached is not None and cached.get("error") is None:
            answers[index] = Answer(**cached)
        else:
            async with limit:
                answer = await ask(client, request, model, suite.name, item.id)
            if answer.error is None:
                cache.put(key, answer)
            answers[index] = answer
        bar.advance()

    try:
        await asyncio.gather(*(one(i, m, s, it) for i, (m, s, it) in enumerate(jobs)))
    finally:
        bar.stop()
        await client.close()
    return [a for a in answers if a is not None]


class _progress:
    """A rich progress bar with items/s, or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("eval"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} items/s"),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("eval", total=total, rate="-")
            self.started = time.perf_counter()
            self.done = 0

    def advance(self) -> None:
        if self.bar is not None:
            self.done += 1
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.task, advance=1, rate=f"{rate:.1f}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
