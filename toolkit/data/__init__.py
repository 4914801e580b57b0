"""Training data: read the recipe's sources, convert every format to conversations, mix, split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import TuneserveError
from toolkit.data.formats import RowError, detect_format, to_example
from toolkit.data.mixing import hold_out, mix_sources
from toolkit.data.reading import _Bad, read_rows
from toolkit.recipe.schema import DataSection

MAX_SHOWN = 5


@dataclass
class SourceReport:
    label: str
    path: str
    format: str
    rows: int
    bad: list[str] = field(default_factory=list)


@dataclass
class PreparedData:
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    sources: list[SourceReport]

    def describe(self) -> str:
        parts = [
            f"{s.label}: {s.rows} rows ({s.format}{f', {len(s.bad)} skipped' if s.bad else ''})"
            for s in self.sources
        ]
        return f"{'; '.join(parts)} -> {len(self.train)} train, {len(self.heldout)} held out"


def load_source(
    path: Path, fmt: str, mode: str | None, on_error: str, label: str
) -> tuple[list[dict[str, Any]], SourceReport]:
    examples: list[dict[str, Any]] = []
    bad: list[str] = []
    detected = fmt
    for located in read_rows(path):
        try:
            if isinstance(located.row, _Bad):
                raise RowError(located.row.reason)
            if detected == "auto":
                detected = detect_format(located.row)
            examples.append(to_example(located.row, detected, mode))
        except RowError as exc:
            bad.append(f"{located.where}: {exc}")
    if bad and on_error == "fail":
        shown = "\n".join(bad[:MAX_SHOWN]) + ("\n..." if len(bad) > MAX_SHOWN else "")
        raise TuneserveError(
            f"{len(bad)} bad row(s) in {path}:\n{shown}",
            "fix the rows, or set data.on_error: skip to train without them",
        )
    if not examples:
        raise TuneserveError(
            f"{path}: no usable rows", "check the file's format (data.sources[].format)"
        )
    return examples, SourceReport(label, str(path), detected, len(examples), bad)


def prepare_data(data: DataSection) -> PreparedData:
    if not data.sources:
        raise TuneserveError(
            "data.sources is empty: nothing to train on", "add a data file under data.sources"
        )
    rng = random.Random(data.shuffle_seed)
    train_parts: dict[str, list[dict[str, Any]]] = {}
    heldout: list[dict[str, Any]] = []
    reports = []
    for source in data.sources:
        examples, report = load_source(
            Path(source.path), source.format, source.mode, data.on_error, source.label
        )
        kept, held = hold_out(examples, data.eval_split, rng)
        train_parts[source.label] = train_parts.get(source.label, []) + kept
        heldout += held
        reports.append(report)
    weights = {s.label: s.weight for s in data.sources}
    train = mix_sources(train_parts, mix=data.mix, weights=weights, seed=data.shuffle_seed)
    return PreparedData(train, heldout, reports)
