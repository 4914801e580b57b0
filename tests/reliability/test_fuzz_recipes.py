"""Fuzzed bad recipes: every one gets a TuneserveError naming the file and field, never a crash."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.counts import record
from toolkit.core.errors import TuneserveError
from toolkit.recipe.loader import load_recipe
from toolkit.recipe.schema import Recipe

SECTIONS = {name: field for name, field in Recipe.model_fields.items() if name != "name"}
# Values of the wrong type for any field: numbers where text is wanted, text where numbers are,
# nested structures, huge and negative values, odd Unicode.
WRONG_VALUES = st.one_of(
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=12).map(lambda s: f"x{s}"),
    st.integers(max_value=-1),
    st.integers(min_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: f != f or abs(f) > 1e9),
    st.lists(st.integers(), min_size=1, max_size=3).map(lambda v: {"nested": v}),
    st.sampled_from(["\u0000", "\ud7ff\ufffd", "🙂" * 50, "../../etc/passwd"]),
)


def section_fields(section: str) -> list[str]:
    model = SECTIONS[section].annotation
    return list(model.model_fields)


@st.composite
def bad_recipes(draw) -> tuple[dict, str]:
    """A recipe with exactly one wrong thing, and the dotted field the error must name."""
    section = draw(st.sampled_from(sorted(SECTIONS)))
    kind = draw(st.sampled_from(["unknown_key", "wrong_value", "section_not_mapping"]))
    if kind == "unknown_key":
        key = draw(st.text(alphabet=string.ascii_lowercase + "_", min_size=3, max_size=15))
        if key in section_fields(section):
            key += "_typo"
        return {section: {key: 1}}, f"{section}.{key}"
    if kind == "section_not_mapping":
        return {section: draw(st.integers() | st.text(min_size=1, max_size=5))}, section
    fields = [
        f
        for f in section_fields(section)
        if f not in {"name", "api_key", "host", "loftq_config", "mix"}
    ]
    key = draw(st.sampled_from(fields))
    return {section: {key: draw(WRONG_VALUES)}}, f"{section}.{key}"


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=bad_recipes())
def test_fuzzed_bad_recipes_name_the_field(tmp_path: Path, case):
    data, field = case
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        load_recipe(path)
    except TuneserveError as error:
        assert f"{path}" in error.message and field in error.message, (data, error.message)
        assert error.hint
        record("bad recipes rejected with a named field")
        return
    # Some "wrong" values are valid for permissive fields (e.g. a long string as a run name):
    # they must then round-trip, never crash.
    record("fuzzed recipes that were in fact valid")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(min_size=1, max_size=300))
def test_arbitrary_bytes_never_crash_the_loader(tmp_path: Path, raw: bytes):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(raw)
    try:
        load_recipe(path)
    except TuneserveError as error:
        assert str(path) in error.message or "recipe" in error.message
        record("garbage recipe files rejected cleanly")
        return
    record("garbage recipe files that parsed as valid")
