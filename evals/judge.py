"""The `judge` scorer: another model, behind any OpenAI-compatible endpoint, grades an answer.

Where it asks (base URL, model, key) comes from the suite item's `judge` object, else the
`--judge-*` flags, else the endpoint under evaluation. judging.py sends the requests through
the same runner (and so the same client, retries and response cache) as the answers they grade;
the judge replies with `VERDICT: PASS|FAIL` (or `SCORE: n` out of `scale`), parsed leniently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.errors import TuneserveError

DEFAULT_RUBRIC = (
    "The answer responds to the question correctly and completely; when a reference answer is "
    "given, it agrees with the reference (wording may differ)."
)
THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
VERDICT = re.compile(r"verdict\W{0,3}\s*(pass|fail)\b", re.IGNORECASE)
SCORE = re.compile(
    r"score\W{0,3}\s*([-+]?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?", re.IGNORECASE
)
PASS_WORDS = {"pass", "passed", "correct", "yes", "acceptable"}
FAIL_WORDS = {"fail", "failed", "incorrect", "wrong", "no", "unacceptable"}


class JudgeConfig(BaseModel):
    """The `judge` object of a suite item; unset fields fall back to the command line."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = Field(None, description="name of the variable holding the key")
    rubric: str | None = None
    scale: int | None = Field(None, gt=0, le=100, description="unset: PASS/FAIL; n: SCORE 0..n")
    max_tokens: int = Field(256, gt=0, le=32768)


@dataclass(frozen=True)
class JudgeEndpoint:
    base_url: str
    model: str
    api_key: str | None


def _url(url: str) -> str:
    return url.rstrip("/")


def resolve_endpoint(
    config: JudgeConfig | None,
    defaults: JudgeConfig,
    eval_base_url: str,
    eval_key: str | None,
    allowed: Collection[str] = (),
) -> JudgeEndpoint:
    """Item fields win over flags; the endpoint under evaluation is the last resort for the URL.

    Keys follow the user, not the data file: the eval key goes only to the endpoint under
    test, --judge-api-key only to the judge named on the command line, and a variable named by
    an item's `api_key_env` is read only for a judge URL on the command line or in `allowed`
    (--allow-judge). Anything else would let a suite file send any secret to any host.
    """
    item = config or JudgeConfig()
    model = item.model or defaults.model
    if not model:
        raise TuneserveError(
            "the judge scorer needs a judge model",
            "set `judge.model` in the suite item or pass --judge-model NAME",
        )
    base_url = _url(item.base_url or defaults.base_url or eval_base_url)
    judge_url = _url(defaults.base_url or eval_base_url)
    trusted = base_url in {judge_url, _url(eval_base_url), *(_url(u) for u in allowed)}
    key = item.api_key  # written in the suite itself: its author's key, sent where it says
    key_env = item.api_key_env or defaults.api_key_env
    if key is None and key_env:
        if not trusted:
            raise TuneserveError(
                f"a suite item's judge asks for ${key_env} to be sent to {base_url}, "
                "a host not named on the command line",
                f"if you trust that judge, pass --allow-judge {base_url}; "
                "else judge with --judge-base-url/--judge-api-key",
            )
        key = os.environ.get(key_env)
    if key is None and (base_url == judge_url or base_url in map(_url, allowed)):
        key = defaults.api_key
    if key is None and base_url == _url(eval_base_url):
        key = eval_key
    return JudgeEndpoint(base_url, model, key)


def check_judges(
    suites: list[Any],
    defaults: JudgeConfig,
    eval_base_url: str,
    eval_key: str | None,
    allowed: Collection[str] = (),
) -> None:
    """Fail before anything is asked when a `judge` item has no judge model to ask, or asks
    for a key to go to a host the user did not name."""
    for suite in suites:
        for item in suite.items:
            if item.scorer == "judge":
                resolve_endpoint(item.judge, defaults, eval_base_url, eval_key, allowed)


def judge_messages(
    question: list[dict[str, Any]], answer: str, expected: Any, rubric: str, scale: int | None
) -> list[dict[str, str]]:
    ask = "\n".join(f"{m['role']}: {m['content']}" for m in question)
    reference = "" if expected in (None, "") else f"\n\n[Reference answer]\n{expected}"
    if scale is None:
        verdict = "End your reply with one line: `VERDICT: PASS` or `VERDICT: FAIL`."
    else:
        verdict = f"End your reply with one line: `SCORE: n` where n is from 0 to {scale}."
    return [
        {
            "role": "system",
            "content": "You grade answers strictly against a rubric. " + verdict,
        },
        {
            "role": "user",
            "content": f"[Rubric]\n{rubric}\n\n[Question]\n{ask}{reference}\n\n"
            f"[Answer to grade]\n{answer}\n\n{verdict}",
        },
    ]


def parse_verdict(text: str, scale: int | None) -> float:
    """The judge's grade in [0, 1]; raises ValueError when the reply holds none.

    The last explicit `VERDICT:`/`SCORE:` wins (judges often restate the format before
    answering); thinking is ignored; a bare PASS/FAIL-like word is accepted as the whole reply.
    """
    body = THINK.sub(" ", text).strip()
    verdicts = VERDICT.findall(body)
    scores = SCORE.findall(body)
    if verdicts and (scale is None or not scores):
        return 1.0 if verdicts[-1].lower() == "pass" else 0.0
    if scores:
        value, out_of = scores[-1]
        top = float(out_of) if out_of else float(scale or 1)
        grade = float(value) / top
        if not 0.0 <= grade <= 1.0:
            raise ValueError(f"judge score {value} is outside 0..{top:g}")
        return grade
    words = re.findall(r"[a-z]+", body.lower())
    if len(words) <= 3 and words:
        found = {w for w in words if w in PASS_WORDS | FAIL_WORDS}
        if len(found) == 1:
            return 1.0 if found.pop() in PASS_WORDS else 0.0
    raise ValueError(f"no verdict in the judge's reply: {body[-120:]!r}")
