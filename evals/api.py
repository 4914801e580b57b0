"""`run_eval`: suites x models through any OpenAI-compatible endpoint -> scored, compared, reported."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evals.compare import model_stats, paired_stats
from evals.endpoint import fetch_served
from evals.gate import DEFAULT_MARGIN
from evals.judge import JudgeConfig, check_judges
from evals.judging import judge_answers
from evals.report import as_json, item_records, write_report
from evals.runner import Answer, ResponseCache, run_items
from evals.scorers import resolve_scorer, similarity
from evals.suite import Suite, resolve_suite
from toolkit.core.artifacts import run_dir


@dataclass
class EvalReport:
    data: dict[str, Any]
    folder: Path | None

    def summary(self) -> dict[str, float]:
        return {f"{s['suite']}/{s['model']}": round(s["score"], 4) for s in self.data["models"]}


def score_answers(
    suites: list[Suite],
    answers: list[Answer],
    judged: dict[tuple[str, str, str], float] | None = None,
) -> dict[tuple[str, str, bool], dict[str, float]]:
    """(suite, model, repeat) -> {item id: score}, the mean over the item's `k` samples;
    `repeat` marks the baseline's second pass (the noise floor). An errored request scores 0;
    `judge` items take their grade from `judged` ((suite, model, item) -> grade)."""
    items = {(s.name, i.id): i for s in suites for i in s.items}
    samples: dict[tuple[str, str, bool], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for answer in answers:
        item = items[(answer.suite, answer.item)]
        if answer.error:
            score = 0.0
        elif item.scorer == "judge":
            score = (judged or {}).get((answer.suite, answer.model, answer.item), 0.0)
        else:
            score = float(resolve_scorer(item.scorer)(answer.output, item.expected))
        samples[(answer.suite, answer.model, answer.repeat)][item.id].append(score)
    return {
        key: {item: sum(values) / len(values) for item, values in by_item.items()}
        for key, by_item in samples.items()
    }


def run_eval(
    *,
    suites: list[str],
    models: list[str],
    base_url: str,
    api_key: str | None = None,
    run: str | None = None,
    report_dir: Path | None = None,
    concurrency: int = 8,
    max_tokens: int = 256,
    seed: int = 0,
    timeout: float = 120.0,
    progress: bool = True,
    on_answer: Callable[[int, int], None] | None = None,
    model_versions: dict[str, str] | None = None,
    judge: JudgeConfig | None = None,
    guard_margin: float = DEFAULT_MARGIN,
    noise_floor: bool = True,
    allowed_judges: Sequence[str] = (),
    cache_endpoint: str | None = None,
) -> EvalReport:
    """Ask every item of `suites` of every model, score, compare with the first model, report.

    `model_versions` names what each model is (e.g. an export hash) so the response cache never
    answers a changed model; `judge` holds the default endpoint of the judge scorer;
    `allowed_judges` are judge URLs named by suite items that may receive keys (--allow-judge).
    Cached answers are reused only for the same endpoint (`cache_endpoint`, default `base_url`)
    and the same served model (the identity its `/v1/models` entry gives, else its name). Each
    comparison is judged for non-inferiority at `guard_margin`; with `noise_floor` the first
    model answers everything twice and the report states how much it differed from itself.
    """
    run_folder = run_dir(run) if run else None
    loaded = [resolve_suite(spec, run_folder) for spec in suites]
    check_judges(loaded, judge or JudgeConfig(), base_url, api_key, allowed_judges)
    cache = ResponseCache((report_dir / "responses.jsonl") if report_dir else None)
    served = fetch_served(base_url, api_key, models, timeout)
    versions = model_versions or {}
    scopes = {
        s.name: s.cache_scope(cache_endpoint or base_url, versions.get(s.name, "")) for s in served
    }
    answers = asyncio.run(
        run_items(
            loaded,
            models,
            base_url=base_url,
            api_key=api_key,
            concurrency=concurrency,
            max_tokens=max_tokens,
            seed=seed,
            timeout=timeout,
            cache=cache,
            progress=progress,
            on_answer=on_answer,
            cache_scopes=scopes,
            repeat_baseline=noise_floor and len(models) > 0,
        )
    )
    judged, problems = judge_answers(
        loaded,
        answers,
        defaults=judge or JudgeConfig(),
        eval_base_url=base_url,
        eval_key=api_key,
        cache=cache,
        concurrency=concurrency,
        seed=seed,
        timeout=timeout,
        allowed=allowed_judges,
    )
    # An answer the judge could not grade counts as an error of that item (scored 0).
    answers = [
        replace(a, error=problems[(a.suite, a.model, a.item)])
        if (a.suite, a.model, a.item) in problems
        else a
        for a in answers
    ]
    scores = score_answers(loaded, answers, judged)
    by_key: dict[tuple[str, str], list[Answer]] = defaultdict(list)
    for answer in answers:
        if not answer.repeat:
            by_key[(answer.suite, answer.model)].append(answer)
    stats, pairs, floors = [], [], []
    for suite in loaded:
        order = [item.id for item in suite.items]
        for model in models:
            extra = {}
            if suite.name == "heldout":
                expected = {i.id: i.expected for i in suite.items}
                extra["similarity"] = [
                    similarity(a.output, expected[a.item]) for a in by_key[(suite.name, model)]
                ]
            values = [scores[(suite.name, model, False)][i] for i in order]
            stats.append(
                model_stats(model, suite.name, values, by_key[(suite.name, model)], extra, order)
            )
        baseline = [scores[(suite.name, models[0], False)][i] for i in order]
        for model in models[1:]:
            pairs.append(
                paired_stats(
                    suite.name,
                    models[0],
                    model,
                    baseline,
                    [scores[(suite.name, model, False)][i] for i in order],
                    guard_margin,
                )
            )
        again = scores.get((suite.name, models[0], True), {})
        repeated = [i for i in order if i in again]
        if repeated:
            first = [scores[(suite.name, models[0], False)][i] for i in repeated]
            floors.append(
                paired_stats(
                    suite.name, models[0], f"{models[0]} again", first, [again[i] for i in repeated]
                )
            )
    meta = {
        "base_url": base_url,
        "models": models,
        "suites": [s.name for s in loaded],
        "seed": seed,
        "max_tokens": max_tokens,
        "decoding": decoding(loaded),
        "guard_margin": guard_margin,
        "cache": {
            "file": str(cache.path) if cache.path else None,
            "answers_from_cache": sum(a.cached for a in answers),
            "answers_asked": sum(not a.cached for a in answers),
            "keyed_by": {s.name: s.keyed_by for s in served},
            "identities": {s.name: s.identity for s in served},
        },
    }
    report = as_json(stats, pairs, meta, floors)
    # each item's answers, for the compare page's flipped items
    report["items"] = item_records(loaded, models, answers, scores)
    if report_dir is not None:
        write_report(report_dir, report)
    return EvalReport(report, report_dir)


def decoding(suites: list[Suite]) -> dict[str, str]:
    """How each suite was decoded, for the report: greedy, or k samples at a temperature."""
    found = {}
    for suite in suites:
        kinds = sorted(
            {
                "greedy" if not item.temperature else f"{item.k} x T={item.temperature:g}"
                for item in suite.items
            }
        )
        found[suite.name] = ", ".join(kinds)
    return found
