"""Suites: JSONL items validated with pydantic, errors by file:line; built-ins `guard` and `heldout`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evals.judge import JudgeConfig
from evals.scorers import BUILTIN, JUDGED
from toolkit.core.errors import TuneserveError
from toolkit.core.modes import Mode

BUILTIN_DIR = Path(__file__).with_name("suites")


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    expected: Any
    scorer: str = "normalized"
    mode: Mode | None = None
    max_tokens: int | None = Field(None, gt=0, le=32768)
    # Scored items decode greedily unless they ask for sampling: a temperature, and `k`
    # samples whose scores are averaged (one sample at a temperature is a coin toss).
    temperature: float | None = Field(None, ge=0, le=2)
    k: int = Field(1, ge=1, le=64)
    judge: JudgeConfig | None = None  # where the `judge` scorer asks (else the --judge-* flags)

    @field_validator("messages")
    @classmethod
    def _roles(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, message in enumerate(messages):
            if message.get("role") not in {"system", "user", "assistant", "tool"}:
                raise ValueError(f"message {index} has role {message.get('role')!r}")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"message {index} content must be a string")
        return messages

    @field_validator("scorer")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in BUILTIN and name not in JUDGED and ":" not in name:
            raise ValueError(
                f"unknown scorer {name!r}; use one of {sorted([*BUILTIN, *JUDGED])} "
                "or module:function"
            )
        return name

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> Item:
        if self.k > 1 and not self.temperature:
            raise ValueError(
                f"k is {self.k} but decoding is greedy (temperature unset or 0), so every "
                "sample would be the same; set temperature > 0 or drop k"
            )
        if self.k > 1 and self.scorer == "judge":
            raise ValueError("k > 1 is not supported with the judge scorer; drop k")
        return self


class Suite(BaseModel):
    name: str
    items: list[Item]


def load_suite_file(path: Path, name: str | None = None) -> Suite:
    if not path.is_file():
        raise TuneserveError(
            f"suite {path} does not exist", "give a .jsonl file or a built-in: guard, heldout"
        )
    items, problems, seen = [], [], set()
    for number, line in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
    ):
        if not line.strip():
            continue
        try:
            item = Item.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not valid JSON ({exc.msg})")
            continue
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "item"
                problems.append(
                    f"{path}:{number}: {field}: {err['msg'].removeprefix('Value error, ')}"
                )
            continue
        if item.id in seen:
            problems.append(f"{path}:{number}: id: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if problems:
        raise TuneserveError("\n".join(problems[:20]), "fix the suite lines named above")
    if not items:
        raise TuneserveError(f"suite {path} has no items")
    return Suite(name=name or path.stem, items=items)


def heldout_suite(run_folder: Path) -> Suite:
    """The run's held-out split: reply like the reference (normalized match, similarity reported)."""
    path = run_folder / "data" / "heldout.jsonl"
    if not path.is_file():
        raise TuneserveError(
            f"{path} does not exist", "train the run first (its eval split is saved then)"
        )
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        row = json.loads(line)
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if messages[-1]["role"] != "assistant":
            continue
        items.append(
            Item(
                id=f"heldout-{number}",
                messages=messages[:-1],
                expected=messages[-1]["content"],
                mode=row.get("mode"),
            )
        )
    if not items:
        raise TuneserveError(f"{path} has no usable rows", "set data.eval_split > 0 and retrain")
    return Suite(name="heldout", items=items)


def resolve_suite(spec: str, run_folder: Path | None) -> Suite:
    if spec == "heldout":
        if run_folder is None:
            raise TuneserveError("the heldout suite needs a run", "add --run NAME")
        return heldout_suite(run_folder)
    if (BUILTIN_DIR / f"{spec}.jsonl").is_file():
        return load_suite_file(BUILTIN_DIR / f"{spec}.jsonl", spec)
    return load_suite_file(Path(spec))
