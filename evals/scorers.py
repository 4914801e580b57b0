"""Scorers: (output, expected) -> score in [0, 1]. Pure functions, looked up by name.

`module:function` names a custom scorer with the same signature. `judge` is the one scorer
that is not a pure function: another model grades the answer (evals/judge.py).
"""

from __future__ import annotations

import importlib
import json
import re
import string
import unicodedata
from collections.abc import Callable
from typing import Any

from toolkit.core.errors import TuneserveError

Scorer = Callable[[str, Any], float]
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def normalize(text: str) -> str:
    """Lowercase, strip accents, punctuation and articles, collapse spaces (SQuAD-style)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = "".join(" " if c in string.punctuation else c for c in text)
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def exact(output: str, expected: Any) -> float:
    return float(output.strip() == str(expected).strip())


def normalized(output: str, expected: Any) -> float:
    return float(normalize(output) == normalize(str(expected)))


def contains(output: str, expected: Any) -> float:
    options = expected if isinstance(expected, list) else [expected]
    return float(any(normalize(str(o)) in normalize(output) for o in options))


def regex(output: str, expected: Any) -> float:
    return float(re.search(str(expected), output, re.IGNORECASE | re.DOTALL) is not None)


def choice(output: str, expected: Any) -> float:
    """Multiple choice: the first standalone letter A-Z (or the option text) must be `expected`."""
    found = re.search(r"\b([A-Z])\b", output.strip())
    return float(found is not None and found.group(1) == str(expected).strip().upper())


def number(output: str, expected: Any) -> float:
    """The last number in the output equals `expected` (a number, or {value, tolerance})."""
    target, tolerance = (
        (expected["value"], expected.get("tolerance", 1e-6))
        if isinstance(expected, dict)
        else (expected, 1e-6)
    )
    found = NUMBER.findall(output)
    if not found:
        return 0.0
    try:
        value = float(found[-1].replace(",", ""))
    except ValueError:
        return 0.0
    return float(abs(value - float(target)) <= tolerance * max(1.0, abs(float(target))))


def json_schema(output: str, expected: Any) -> float:
    """The output (or its first {...} block) is JSON valid against the schema `expected`."""
    import jsonschema

    text = output.strip()
    if "```" in text:
        text = re.sub(r"^.*?```(?:json)?\s*|\s*```.*$", "", text, flags=re.DOTALL)
    match = re.search(r"\{.*\}|\[.*\]", text, re.DOTALL)
    if not match:
        return 0.0
    try:
        jsonschema.validate(json.loads(match.group(0)), expected)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return 0.0
    return 1.0


def similarity(output: str, expected: Any) -> float:
    """Token F1 between normalized texts: partial credit for near answers."""
    got, want = normalize(output).split(), normalize(str(expected)).split()
    if not got or not want:
        return float(got == want)
    common = sum(min(got.count(w), want.count(w)) for w in set(want))
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


BUILTIN: dict[str, Scorer] = {
    "exact": exact,
    "normalized": normalized,
    "contains": contains,
    "regex": regex,
    "choice": choice,
    "number": number,
    "json_schema": json_schema,
    "similarity": similarity,
}


# Scored by another model through the runner (evals/judge.py), not by a pure function.
JUDGED = {"judge"}


def resolve_scorer(name: str) -> Scorer:
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attribute = name.partition(":")
    if not attribute:
        raise TuneserveError(
            f"unknown scorer {name!r}", f"use one of {sorted(BUILTIN)} or module:function"
        )
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise TuneserveError(
            f"scorer {name!r} cannot be imported ({exc})", "check the module path"
        ) from None
