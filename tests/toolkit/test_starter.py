"""The starter recipe of `tuneserve init` is generated from the recipe model: every field, its
default and its description, so that neither can drift from `toolkit/recipe/schema.py`."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, Field

from toolkit.recipe.loader import load_recipe
from toolkit.recipe.schema import Recipe, Section
from toolkit.starter import starter_recipe, undescribed_fields, write_starter


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a recipe, a list of sections (data.sources) counting as its item."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        annotation = field.annotation
        inner = annotation.__args__[0] if getattr(annotation, "__origin__", None) is list else None
        for section in (annotation, inner):
            if isinstance(section, type) and issubclass(section, BaseModel):
                item = ".0" if section is inner else ""
                paths += field_paths(section, f"{prefix}{name}{item}.")
    return paths


def has_path(data: Any, dotted: str) -> bool:
    for key in dotted.split("."):
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return False
    return True


def test_the_starter_recipe_loads_as_the_defaults_plus_the_sample(tmp_path):
    recipe_path, _ = write_starter(tmp_path)
    expected = Recipe.model_validate(
        {
            "name": "my-first-run",
            "data": {
                "sources": ["data/sample.jsonl"],
                "eval_split": 0.25,
                "replay": {"ratio": 0.5},
            },
        },
        context={"base_dir": tmp_path},
    )
    assert load_recipe(recipe_path) == expected


def test_every_field_of_the_recipe_is_written_with_its_default():
    written = yaml.safe_load(starter_recipe())
    paths = field_paths(Recipe)
    assert {"train.max_grad_norm", "export.max_ppl_ratio", "serve.api_key", "eval.seed"} <= set(
        paths
    ) and "data.sources.0.weight" in paths
    assert [p for p in paths if not has_path(written, p)] == []
    defaults = Recipe()
    assert written["train"]["max_grad_norm"] == defaults.train.max_grad_norm
    assert written["eval"]["concurrency"] == defaults.eval.concurrency
    assert written["lora"]["target_modules"] == defaults.lora.target_modules


def test_every_recipe_field_has_a_description_for_the_starters_comment():
    assert undescribed_fields(Recipe) == []


def test_a_field_without_a_description_is_caught():
    class Inner(Section):
        described: int = Field(1, description="says what it does")
        bare: int = 2

    class Outer(Section):
        inner: Inner = Field(default_factory=Inner, description="a section")
        items: list[Inner] = Field(default_factory=list)

    assert undescribed_fields(Outer) == ["inner.bare", "items", "items.bare"]


def test_comments_carry_the_description_and_the_choices():
    lines = starter_recipe().splitlines()
    grad = next(line for line in lines if line.strip().startswith("max_grad_norm:"))
    assert "# gradients are clipped to this norm" in grad
    dtype = next(line for line in lines if line.strip().startswith("dtype:"))
    assert "# auto | float32 | float16 | bfloat16" in dtype
    eval_split = next(line for line in lines if line.strip().startswith("eval_split:"))
    assert "(default 0.1)" in eval_split
