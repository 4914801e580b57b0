"""`tuneserve init`: a commented starter recipe and a sample dataset that `train` accepts as is."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from toolkit.core.artifacts import atomic_write_text
from toolkit.core.errors import TuneserveError


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    files = resources.files("toolkit") / "starter_files"
    recipe = directory / "recipe.yaml"
    dataset = directory / "data" / "sample.jsonl"
    if recipe.exists() and not force:
        raise TuneserveError(f"{recipe} already exists", "pass --force to overwrite it")
    atomic_write_text(recipe, (files / "recipe.yaml").read_text(encoding="utf-8"))
    if not dataset.exists() or force:
        atomic_write_text(dataset, (files / "sample.jsonl").read_text(encoding="utf-8"))
    return [recipe, dataset]
