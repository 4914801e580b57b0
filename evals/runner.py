"""The runner: every request through one `openai.AsyncOpenAI`, bounded concurrency, a disk cache.

The cache is append-only JSON Lines keyed by a hash of the request and its scope (the endpoint,
the served model's identity, a version; evals/endpoint.py): an interrupted eval resumes where it
stopped, a repeated one sends nothing, and another endpoint or a re-served model under the same
name is asked again. Retries with
backoff on 429/5xx and connection errors are the openai client's own (max_retries).
Per-request work is kept small so the harness never limits the engine's throughput
(benchmarks/eval_throughput.py): one pooled connection per worker, answers read from the raw
JSON, cache lines written in batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.suite import Item, Suite

FLUSH_SECONDS = 0.25  # a kill loses at most this much of finished work (it is re-asked)


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
    sample: int = 0  # which of the item's `k` samples
    repeat: bool = False  # the baseline asked again, for the noise floor
    cached: bool = False  # answered from the response cache, not asked this time


@dataclass
class Job:
    """One request to send; `index` is its place in the result list."""

    index: int
    model: str
    suite: str
    item: str
    request: dict[str, Any]
    key: str
    sample: int = 0
    repeat: bool = False


def request_for(
    item: Item, model: str, max_tokens: int, seed: int, sample: int = 0
) -> dict[str, Any]:
    """The item's request: greedy (temperature 0, sent explicitly so no server's sampling
    defaults apply) unless the item asks for a temperature; sample `i` of `k` gets seed + i."""
    request: dict[str, Any] = {
        "model": model,
        "messages": item.messages,
        "max_tokens": item.max_tokens or max_tokens,
        "seed": seed + sample,
        "temperature": item.temperature if item.temperature is not None else 0.0,
    }
    if item.mode is not None:
        request["chat_template_kwargs"] = {"enable_thinking": item.mode == "thinking"}
    return request


def cached_answer(line: dict[str, Any], job: Job) -> Answer:
    """A cached answer for `job`: who asked, which item and which sample come from the job (two
    items with the same prompt share one cache line), the answer itself from the line."""
    fields = {k: v for k, v in line.items() if k in Answer.__dataclass_fields__}
    placed = {"model": job.model, "suite": job.suite, "item": job.item}
    return Answer(
        **{**fields, **placed, "sample": job.sample, "repeat": job.repeat, "cached": True}
    )


def cache_key(request: dict[str, Any], scope: str = "") -> str:
    """`scope` names who answers (endpoint, served identity, version), so a new one is re-asked."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":")) + scope
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class ResponseCache:
    """Answers by key, loaded from and appended to a JSONL file; lines cut by a kill are skipped."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.pending: list[str] = []
        self.flushed_at = time.monotonic()
        if path and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                self.entries[entry["key"]] = entry["answer"]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, answer: dict[str, Any]) -> None:
        self.entries[key] = answer
        if self.path is not None:
            self.pending.append(json.dumps({"key": key, "answer": answer}) + "\n")
            if time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
                self.flush()

    def flush(self) -> None:
        """One write for every answer since the last flush (a write per answer costs more
        than the request on a fast engine)."""
        self.flushed_at = time.monotonic()
        if not self.pending or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write("".join(self.pending))
        self.pending.clear()


def make_client(base_url: str, api_key: str | None, timeout: float, concurrency: int) -> Any:
    """One AsyncOpenAI for the whole run over a connection pool sized to the concurrency."""
    import httpx
    import openai

    pool = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # Loading the CA bundle costs ~0.15 s a client; a plain-http endpoint (a local engine) has
    # no certificate to check.
    verify = not base_url.startswith("http://")
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key or "none",
        timeout=timeout,
        max_retries=4,
        http_client=openai.DefaultAsyncHttpxClient(limits=pool, timeout=timeout, verify=verify),
    )


async def ask(client: Any, job: Job) -> Answer:
    """Send one chat completion; an API error becomes an Answer with `error` set."""
    import httpx
    import openai

    started = time.perf_counter()
    try:
        # The client's own request path (auth, retries with backoff, timeouts, status errors),
        # without building typed models for the request and the reply: only three fields of
        # the reply are read, and the typed round trip cost more than the request itself.
        response = await client.post("/chat/completions", body=job.request, cast_to=httpx.Response)
        reply = json.loads(response.content)
        message = reply["choices"][0]["message"]
    except (openai.APIError, ValueError, KeyError, IndexError, TypeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        latency = time.perf_counter() - started
        return Answer(
            job.model, job.suite, job.item, "", None, latency, 0, error, job.sample, job.repeat
        )
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    tokens = (reply.get("usage") or {}).get("completion_tokens") or 0
    latency = time.perf_counter() - started
    output = message.get("content") or ""
    return Answer(
        job.model,
        job.suite,
        job.item,
        output,
        reasoning,
        latency,
        tokens,
        None,
        job.sample,
        job.repeat,
    )


async def run_jobs(
    jobs: list[Job],
    client: Any,
    *,
    concurrency: int,
    cache: ResponseCache,
    on_answer: Callable[[int, int], None] | None = None,
) -> list[Answer]:
    """Answer every job, from the cache where it can; `concurrency` workers share the client."""
    answers: list[Answer | None] = [None] * len(jobs)
    queue: list[Job] = []
    done = 0
    for job in jobs:
        cached = cache.get(job.key)
        if cached is not None and cached.get("error") is None:
            answers[job.index] = cached_answer(cached, job)
            done += 1
        else:
            queue.append(job)
    if on_answer is not None:
        on_answer(done, len(jobs))
    pending = iter(queue)

    async def worker() -> None:
        nonlocal done
        for job in pending:  # a shared iterator: each job goes to exactly one worker
            answer = await ask(client, job)
            if answer.error is None:
                cache.put(job.key, {k: v for k, v in answer.__dict__.items() if k != "cached"})
            answers[job.index] = answer
            done += 1
            if on_answer is not None:
                on_answer(done, len(jobs))

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(queue)))))
    finally:
        cache.flush()
    return [a for a in answers if a is not None]


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
    on_answer: Callable[[int, int], None] | None = None,
    cache_scopes: dict[str, str] | None = None,
    repeat_baseline: bool = False,
) -> list[Answer]:
    """Every sample of every item for every model; `cache_scopes[model]` goes into its cache
    keys (default: the endpoint URL). With `repeat_baseline`, the first model answers each item
    once more (under its own cache key) to measure the noise floor."""
    scopes = cache_scopes or {}
    passes = [(model, False) for model in models]
    if repeat_baseline and models:
        passes.append((models[0], True))
    jobs = []
    # Item by item, every model in turn: each model's engine has work all along (model by
    # model, the other engines would sit idle while one answers its whole share).
    for suite in suites:
        for item in suite.items:
            for model, repeat in passes:
                if repeat and item.scorer == "judge":  # one judge grade per item and model
                    continue
                scope = scopes.get(model, base_url) + ("#repeat" if repeat else "")
                for sample in range(item.k):
                    request = request_for(item, model, max_tokens, seed, sample)
                    key = cache_key(request, scope)
                    job = Job(len(jobs), model, suite.name, item.id, request, key, sample, repeat)
                    jobs.append(job)
    bar = _progress(len(jobs), progress)

    def report(done: int, total: int) -> None:
        bar.update(done)
        if on_answer is not None:
            on_answer(done, total)

    client = make_client(base_url, api_key, timeout, concurrency)
    try:
        return await run_jobs(jobs, client, concurrency=concurrency, cache=cache, on_answer=report)
    finally:
        bar.stop()
        await client.close()


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
            self.first: int | None = None

    def update(self, done: int) -> None:
        if self.bar is not None:
            if self.first is None:  # answers from the cache are not part of the rate
                self.first = done
            rate = (done - self.first) / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.task, completed=done, rate=f"{rate:.1f}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
