"""Read a data source (jsonl/json/parquet/csv file or a folder of them) row by row, with locations.

JSON Lines are read line by line so a bad row is reported by its line; JSON arrays, parquet and
CSV go through `datasets` and are reported by item (CSV: by line, counting the header).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.errors import TuneserveError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class Located:
    """A raw row and where it came from (`file:line` or `file item N`)."""

    row: Any
    where: str


def source_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise TuneserveError(
                f"{path}: unsupported data file type {path.suffix!r}",
                f"use one of {', '.join(SUFFIXES)}",
            )
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise TuneserveError(f"{path}: no {'/'.join(SUFFIXES)} files in this folder")
    return files


def read_rows(path: Path) -> Iterator[Located]:
    for file in source_files(path):
        if file.stat().st_size == 0:
            raise TuneserveError(
                f"{file}: the file is empty", "add rows or remove it from data.sources"
            )
        if file.suffix == ".jsonl":
            yield from _read_jsonl(file)
        elif file.suffix == ".json":
            yield from _read_json(file)
        else:
            yield from _read_with_datasets(file)


def _read_jsonl(file: Path) -> Iterator[Located]:
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{file}:{number}"
            if not raw.strip():
                continue
            try:
                yield Located(json.loads(raw.decode("utf-8")), where)
            except UnicodeDecodeError:
                yield Located(_Bad("not UTF-8 text"), where)
            except json.JSONDecodeError as exc:
                yield Located(_Bad(f"not valid JSON ({exc.msg} at column {exc.colno})"), where)
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                yield Located(_Bad(f"not usable JSON ({str(exc)[:100]})"), where)
            except RecursionError:  # the C decoder recurses once per nesting level
                yield Located(_Bad("JSON nested too deeply to be a row"), where)


def _read_json(file: Path) -> Iterator[Located]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, 4300+ digit integers
        line = getattr(exc, "lineno", 1)
        raise TuneserveError(
            f"{file}:{line}: not valid JSON ({exc})", "fix the file, or use JSON Lines"
        ) from None
    rows = data if isinstance(data, list) else [data]
    for index, row in enumerate(rows):
        yield Located(row, f"{file} item {index}")


def _read_with_datasets(file: Path) -> Iterator[Located]:
    from datasets import Dataset

    try:
        table = (
            Dataset.from_parquet(str(file))
            if file.suffix == ".parquet"
            else Dataset.from_csv(str(file))
        )
    except Exception as exc:  # datasets raises many types for unreadable files
        kind = file.suffix[1:]
        raise TuneserveError(
            f"{file}: cannot read it as {kind} ({str(exc)[:200]})",
            f"check that it is a {kind} file with a header and one row per example",
        ) from None
    offset = 2 if file.suffix == ".csv" else 0
    for index, row in enumerate(table):
        row = {k: _maybe_json(v) for k, v in row.items()}
        where = f"{file}:{index + offset}" if offset else f"{file} item {index}"
        yield Located(row, where)


def _maybe_json(value: Any) -> Any:
    """CSV cells holding JSON (a messages list) are decoded; other text stays text."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class _Bad:
    """A row that could not even be parsed; the reason travels with it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
