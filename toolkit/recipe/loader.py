"""Read a recipe from YAML, apply `--set` overrides, and report every problem with file and line."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from toolkit.core.artifacts import atomic_write_text
from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import Recipe

Location = tuple[str | int, ...]


class _RecipeYamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `2e-4` (PyYAML reads them as strings)."""


_RecipeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Location, int]]:
    """Parse YAML text; return the data and the line (1-based) of every key and list item."""
    loader = None
    try:
        loader = _RecipeYamlLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise TuneserveError(
            f"{where}: not valid YAML ({problem})", "fix the YAML syntax at that line"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Location, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return data, lines


def _record_lines(node: yaml.Node, path: Location, lines: dict[Location, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            lines[child] = key.start_mark.line + 1
            _record_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _record_lines(item, (*path, index), lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.learning_rate=1e-4` -> (["train", "learning_rate"], 0.0001)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TuneserveError(
            f"--set {text!r} is not KEY=VALUE", "write it like --set train.learning_rate=1e-4"
        )
    value, _ = parse_yaml(raw, f"--set {key}") if raw.strip() else (None, {})
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        step: Any = int(key) if isinstance(node, list) and key.isdigit() else key
        if isinstance(node, list):
            if not isinstance(step, int) or step >= len(node):
                raise TuneserveError(
                    f"--set {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} has no item {key}",
                    f"the list has {len(node)} items, numbered from 0",
                )
        elif not isinstance(node.get(step), dict | list):
            node[step] = {}
        node = node[step]
    last = keys[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise TuneserveError(f"--set {'.'.join(keys)}: cannot set a key inside a list value")


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    check_paths: bool = True,
) -> Recipe:
    """Load and validate a recipe; raise one TuneserveError listing every problem."""
    data: Any = {}
    lines: dict[Location, int] = {}
    source = "<defaults>"
    base_dir = Path.cwd()
    if path is not None:
        file = Path(path)
        source = str(path)
        if not file.is_file():
            raise TuneserveError(
                f"recipe {source} does not exist", "create one with `tuneserve init`"
            )
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TuneserveError(f"{source}: not UTF-8 text", "save the recipe as UTF-8") from None
        data, lines = parse_yaml(text, source)
        base_dir = file.resolve().parent
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TuneserveError(
                f"{source}:1: the recipe must be a mapping of sections (model:, lora:, data:, ...)",
                "see `tuneserve init` for a starter recipe",
            )
        data.setdefault("name", file.stem)
        _expand_data_shorthands(data, lines)
    overridden: set[Location] = set()
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
        overridden.add(tuple(int(k) if k.isdigit() else k for k in keys))
    context = {"base_dir": base_dir, "check_paths": check_paths}
    try:
        return Recipe.model_validate(data, context=context)
    except ValidationError as exc:
        problems = [_describe(err, source, lines, overridden) for err in exc.errors()]
        hint = "fix the field(s) named above; `tuneserve init` writes a valid starter recipe"
        raise TuneserveError("\n".join(problems), hint) from None


def _expand_data_shorthands(data: dict[str, Any], lines: dict[Location, int]) -> None:
    """`data: [a.jsonl]` -> `data: {sources: [{path: a.jsonl}]}`, keeping line numbers, so that
    `--set data.sources.0.weight=2` works on either spelling."""
    section = data.get("data")
    if isinstance(section, list):
        data["data"] = section = {"sources": section}
        for loc in [loc for loc in lines if loc[:1] == ("data",) and len(loc) > 1]:
            lines[("data", "sources", *loc[1:])] = lines.pop(loc)
    if isinstance(section, dict) and isinstance(section.get("sources"), list):
        section["sources"] = [{"path": s} if isinstance(s, str) else s for s in section["sources"]]


def _describe(
    err: dict[str, Any], source: str, lines: dict[Location, int], overridden: set[Location]
) -> str:
    loc: Location = tuple(err["loc"])
    field = ".".join(str(part) for part in loc) or "recipe"
    where = _where(loc, source, lines, overridden)
    if err["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        suggestion = _suggest(loc)
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        return f"{where}: {field}: {message}"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] != "missing" and not isinstance(got, dict | list):
        message += f" (got {got!r})"
    return f"{where}: {field}: {message}"


def _where(
    loc: Location, source: str, lines: dict[Location, int], overridden: set[Location]
) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in overridden:
            return f"--set {'.'.join(str(p) for p in loc[:end])}"
        if loc[:end] in lines:
            return f"{source}:{lines[loc[:end]]}"
    return source


def _suggest(loc: Location) -> str | None:
    """The closest known key at the parent of `loc`, walking the recipe's models."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            return None
        model = _model_in(field.annotation)
    if not _is_model(model):
        return None
    matches = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.5)
    return matches[0] if matches else None


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _model_in(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML; `load_recipe` of this text gives an equal Recipe."""
    data = recipe.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def save_recipe(recipe: Recipe, path: Path) -> None:
    atomic_write_text(path, dump_recipe(recipe))
