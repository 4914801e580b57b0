"""`tuneserve init`: a starter recipe generated from the recipe model (every key with its default,
commented with the field's description) and a sample dataset that `train` accepts as is."""

from __future__ import annotations

import textwrap
import types
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from toolkit.core.artifacts import atomic_write_text
from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import Recipe

HEADER = """\
# tuneserve recipe: fine-tune, export, serve and eval in one command.
#   tuneserve run recipe.yaml            # everything, then keep serving
#   tuneserve train recipe.yaml --set train.max_steps=60
# Names follow Unsloth's FastLanguageModel / get_peft_model and TRL's SFTConfig, so values
# from their docs paste in unchanged. Unknown keys are errors. Every key shows its default,
# except the few set for the sample data below (their comments say the default).
"""

# The keys the starter sets for its sample dataset, each with why; everything else is a default.
STARTER_VALUES: dict[str, tuple[Any, str]] = {
    "name": ("my-first-run", "the run lives in models/runs/<name>/"),
    "data.sources": ([{"path": "data/sample.jsonl"}], "the sample that `tuneserve init` wrote"),
    "data.eval_split": (
        0.25,
        "6 of the sample's 24 rows, as with 5 or fewer no change can reach p<0.05",
    ),
    "data.replay.ratio": (0.5, "on here: a small dataset is where a model forgets the most"),
}
COMMENT_COLUMN = 32
WIDTH = 100
# A key line longer than this (a long list) gets its comment on the line above instead.
LONGEST_INLINE = COMMENT_COLUMN + 8


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    files = resources.files("toolkit") / "starter_files"
    recipe = directory / "recipe.yaml"
    dataset = directory / "data" / "sample.jsonl"
    if recipe.exists() and not force:
        raise TuneserveError(f"{recipe} already exists", "pass --force to overwrite it")
    atomic_write_text(recipe, starter_recipe())
    if not dataset.exists() or force:
        atomic_write_text(dataset, (files / "sample.jsonl").read_text(encoding="utf-8"))
    return [recipe, dataset]


def starter_recipe() -> str:
    """The recipe YAML: the model's fields in its order, grouped by section, each commented with
    its accepted values and description, so a new field or default can never be missing here."""
    recipe = Recipe.model_validate(_nested(STARTER_VALUES), context={"check_paths": False})
    lines: list[str] = []
    for name in Recipe.model_fields:
        if isinstance(getattr(recipe, name), BaseModel):
            lines.append("")  # a blank line between top-level sections
        lines.extend(_field_lines(recipe, name, "", name))
    return HEADER + "\n".join(lines) + "\n"


def undescribed_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the fields of `model` (and its sections) without a description."""
    missing = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if not field.description:
            missing.append(dotted)
        for section in _models_in(field.annotation):
            missing += undescribed_fields(section, f"{dotted}.")
    return missing


def _field_lines(owner: BaseModel, name: str, indent: str, dotted: str) -> Iterator[str]:
    field = type(owner).model_fields[name]
    value = getattr(owner, name)
    default = field.get_default(call_default_factory=True)
    comment = _comment(field.annotation, field.description or "", dotted, default)
    if isinstance(value, BaseModel):
        yield from _commented(f"{indent}{name}:", comment)
        yield from _model_lines(value, indent + "  ", dotted)
    elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        yield from _commented(f"{indent}{name}:", comment)
        for item in value:
            item_lines = list(_model_lines(item, indent + "    ", dotted))
            item_lines[0] = f"{indent}  - {item_lines[0].removeprefix(indent + '    ')}"
            yield from item_lines
    else:
        yield from _commented(f"{indent}{name}: {_yaml_value(value)}", comment)


def _model_lines(model: BaseModel, indent: str, dotted: str) -> Iterator[str]:
    for name in type(model).model_fields:
        yield from _field_lines(model, name, indent, f"{dotted}.{name}")


def _comment(annotation: Any, description: str, dotted: str, default: Any) -> str:
    choices = _choices(annotation)
    parts = [" | ".join(choices)] if choices else []
    parts.append(description)
    if dotted in STARTER_VALUES:
        if default not in (None, []):
            parts[-1] += f" (default {_yaml_value(default)})"
        parts.append(STARTER_VALUES[dotted][1])
    return "; ".join(p for p in parts if p)


def _commented(line: str, comment: str) -> Iterator[str]:
    """`line` with `comment` from the comment column on, wrapped onto `#   ` lines below it."""
    if not comment:
        yield line
        return
    column = max(COMMENT_COLUMN, len(line) + 2)
    if column > LONGEST_INLINE:
        indent = line[: len(line) - len(line.lstrip())]
        yield from (f"{indent}# {chunk}" for chunk in _wrap(comment, WIDTH - len(indent) - 2))
        yield line
        return
    chunks = _wrap(comment, WIDTH - column - 4)
    yield f"{line.ljust(column)}# {chunks[0]}"
    for chunk in chunks[1:]:
        yield f"{' ' * column}#   {chunk}"


def _wrap(text: str, width: int) -> list[str]:
    """Lines of `text`; a choice list breaks after a `|`, never before one."""
    glued = text.replace(" | ", "\0| ")
    return [line.replace("\0", " ") for line in textwrap.wrap(glued, width=width)]


def _choices(annotation: Any) -> list[str] | None:
    """The values of a Literal-typed field ("auto | float32 | ..."); None for a free value."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return [_yaml_value(arg) for arg in args]
    if origin in (Annotated, list):
        return _choices(args[0])
    if origin in (Union, types.UnionType):
        found: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            values = ["true", "false"] if arg is bool else _choices(arg)
            if values is None:
                return None
            found += values
        return found if any(f not in ("true", "false") for f in found) else None
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _yaml_value(value: Any) -> str:
    """`value` as one line of YAML (flow style), as the recipe loader reads it back."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...")


def _nested(values: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    """{"data.eval_split": (0.25, why)} -> {"data": {"eval_split": 0.25}}."""
    nested: dict[str, Any] = {}
    for dotted, (value, _) in values.items():
        *parents, last = dotted.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return nested
