"""Asking the judges: every answer of a `judge`-scored item graded by its judge model through
the eval's client and cache (judge.py holds the judge's config, prompt and verdict parsing)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from evals.endpoint import fetch_served
from evals.judge import (
    DEFAULT_RUBRIC,
    JudgeConfig,
    JudgeEndpoint,
    judge_messages,
    parse_verdict,
    resolve_endpoint,
)
from evals.runner import Job, cache_key, make_client, run_jobs


def judge_answers(
    suites: list[Any],
    answers: list[Any],
    *,
    defaults: JudgeConfig,
    eval_base_url: str,
    eval_key: str | None,
    cache: Any,
    concurrency: int,
    seed: int,
    timeout: float,
    allowed: Collection[str] = (),
) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str, str], str]]:
    """Grade every answer of a `judge`-scored item: ({(suite, model, item): grade},
    {(suite, model, item): why it could not be graded}). Judge replies are cached like answers
    (keyed by the judge's URL too), so a repeated eval asks the judge nothing."""
    items = {(s.name, i.id): i for s in suites for i in s.items if i.scorer == "judge"}
    by_endpoint: dict[JudgeEndpoint, list[tuple[Job, int | None]]] = {}
    scopes: dict[JudgeEndpoint, str] = {}  # a judge re-served under its name is asked again
    for answer in answers:
        item = items.get((answer.suite, answer.item))
        if item is None or answer.error:
            continue
        config = item.judge or JudgeConfig()
        endpoint = resolve_endpoint(config, defaults, eval_base_url, eval_key, allowed)
        scale = config.scale if config.scale is not None else defaults.scale
        rubric = config.rubric or defaults.rubric or DEFAULT_RUBRIC
        request = {
            "model": endpoint.model,
            "messages": judge_messages(item.messages, answer.output, item.expected, rubric, scale),
            "max_tokens": config.max_tokens,
            "temperature": 0,
            "seed": seed,
        }
        pairs = by_endpoint.setdefault(endpoint, [])
        if endpoint not in scopes:
            [judge] = fetch_served(endpoint.base_url, endpoint.api_key, [endpoint.model], timeout)
            scopes[endpoint] = judge.cache_scope(f"judge@{endpoint.base_url}")
        key = cache_key(request, scopes[endpoint])
        pairs.append(
            (Job(len(pairs), answer.model, answer.suite, answer.item, request, key), scale)
        )
    grades: dict[tuple[str, str, str], float] = {}
    problems: dict[tuple[str, str, str], str] = {}

    async def ask_all() -> None:
        for endpoint, pairs in by_endpoint.items():
            client = make_client(endpoint.base_url, endpoint.api_key, timeout, concurrency)
            try:
                replies = await run_jobs(
                    [job for job, _ in pairs], client, concurrency=concurrency, cache=cache
                )
            finally:
                await client.close()
            for (job, scale), reply in zip(pairs, replies, strict=True):
                key = (job.suite, job.model, job.item)
                if reply.error:
                    problems[key] = f"judge {endpoint.model} at {endpoint.base_url}: {reply.error}"
                    continue
                try:
                    grades[key] = parse_verdict(reply.output, scale)
                except ValueError as exc:
                    problems[key] = f"judge {endpoint.model}: {exc}"

    if by_endpoint:
        asyncio.run(ask_all())
    return grades, problems
