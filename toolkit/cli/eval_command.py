"""`tuneserve eval`: parse, call evals.api.run_eval, print, gate."""

from __future__ import annotations

import os
from pathlib import Path

import click

from toolkit.cli.main import print_json


@click.command("eval")
@click.option(
    "--suite",
    "suites",
    multiple=True,
    required=True,
    help="guard, heldout, or a .jsonl file (repeatable).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Served model name; the first is the baseline.",
)
@click.option(
    "--base-url",
    default="http://127.0.0.1:8000/v1",
    show_default=True,
    help="Any OpenAI-compatible URL.",
)
@click.option(
    "--api-key",
    default=None,
    envvar="TUNESERVE_API_KEY",
    help="Bearer key for the endpoint (default: $TUNESERVE_API_KEY).",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="VAR",
    help="Read the endpoint's key from $VAR, e.g. --api-key-env OPENAI_API_KEY (never implied).",
)
@click.option("--run", default=None, help="Run name whose held-out split the heldout suite uses.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for report.md/json/png.",
)
@click.option(
    "--fail-on-regression",
    type=float,
    default=None,
    help="Exit 1 when the paired 95% interval of a model's change on any suite reaches below "
    "-X (non-inferiority at margin X).",
)
@click.option(
    "--guard-margin",
    type=click.FloatRange(0, 1),
    default=None,
    help="Margin of the non-inferiority verdict in the report [default: --fail-on-regression, "
    "else 0.05].",
)
@click.option(
    "--noise-floor/--no-noise-floor",
    default=True,
    show_default=True,
    help="Ask the first model every item twice and report how much it differs from itself.",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=None,
    help="Compare to a saved report.json instead of the first model.",
)
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 1024))
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1, 32768))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--judge-base-url", default=None, help="Endpoint of the judge scorer (default: --base-url)."
)
@click.option("--judge-model", default=None, help="Model that grades `judge`-scored items.")
@click.option(
    "--judge-api-key", default=None, envvar="TUNESERVE_JUDGE_API_KEY", help="Key for the judge."
)
@click.option("--judge-rubric", default=None, help="Default rubric for `judge` items without one.")
@click.option(
    "--allow-judge",
    "allowed_judges",
    multiple=True,
    metavar="URL",
    help="Let suite items' own judge at URL get the keys they name (judge.api_key_env).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_command(
    suites: tuple[str, ...],
    models: tuple[str, ...],
    base_url: str,
    api_key: str | None,
    api_key_env: str | None,
    run: str | None,
    report_dir: Path | None,
    fail_on_regression: float | None,
    baseline: Path | None,
    guard_margin: float | None,
    noise_floor: bool,
    concurrency: int,
    max_tokens: int,
    seed: int,
    judge_base_url: str | None,
    judge_model: str | None,
    judge_api_key: str | None,
    judge_rubric: str | None,
    allowed_judges: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run eval suites against models behind any OpenAI-compatible endpoint and compare them.

    \b
    Example:
      tuneserve eval --suite heldout --suite guard --model base --model tuned \\
        --run demo --base-url http://127.0.0.1:8000/v1 --report eval/ --fail-on-regression 0.05

    Scored items decode greedily (temperature 0, sent explicitly) unless an item sets
    `temperature` and `k` samples, whose scores are averaged.

    Items scored `judge` are graded by --judge-model at --judge-base-url (or the item's own
    `judge` object), through the same client and cache. Keys go only where the command line
    says: $OPENAI_API_KEY is sent only with --api-key-env OPENAI_API_KEY, and a suite's own
    judge gets a key only with --allow-judge URL.
    """
    from evals.api import run_eval
    from evals.gate import DEFAULT_MARGIN, regressions
    from evals.judge import JudgeConfig
    from evals.report import load_report, render_markdown
    from toolkit.core.errors import CheckFailed, TuneserveError

    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise TuneserveError(
                f"--api-key-env {api_key_env}: ${api_key_env} is not set",
                f"export {api_key_env}=... or pass --api-key",
            )
    saved = load_report(baseline) if baseline else None
    report = run_eval(
        suites=list(suites),
        models=list(models),
        base_url=base_url,
        api_key=api_key,
        run=run,
        report_dir=report_dir,
        concurrency=concurrency,
        max_tokens=max_tokens,
        seed=seed,
        progress=not as_json,
        judge=JudgeConfig(
            base_url=judge_base_url, model=judge_model, api_key=judge_api_key, rubric=judge_rubric
        ),
        guard_margin=next(
            m for m in (guard_margin, fail_on_regression, DEFAULT_MARGIN) if m is not None
        ),
        noise_floor=noise_floor,
        allowed_judges=allowed_judges,
    )
    if as_json:
        print_json(report.data)
    else:
        click.echo(render_markdown(report.data))
        if report_dir:
            click.echo(f"report: {report_dir / 'report.md'}")
    if fail_on_regression is not None:
        found = regressions(report.data, fail_on_regression, saved)
        if found:
            raise CheckFailed("regression: " + "; ".join(found))
