"""Fuzzed bad dataset rows through the real data loader: every one is a TuneserveError naming
`file:line` (short, with a hint), never a traceback, whatever the row holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.counts import record
from toolkit.core.errors import TuneserveError
from toolkit.data import load_source
from toolkit.data.formats import SHAREGPT_ROLES

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]}
# An error names at most a few bad rows; each line stays readable whatever the row held.
MAX_LINE = 600

NOT_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
# Spelled out rather than NOT_TEXT.filter(bool): hypothesis rewrites a truthiness filter on
# collections into min_size=1 and then trips its own internal assertion (6.170, seen in CI).
TRUTHY_NOT_TEXT = st.one_of(
    st.just(True),
    st.integers().filter(lambda n: n != 0),
    st.floats(allow_nan=False).filter(lambda x: x != 0),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=2),
)
NOT_LIST = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.just({}))
BAD_ROLES = st.one_of(
    st.text(max_size=30).filter(lambda r: r.lower() not in SHAREGPT_ROLES),
    NOT_TEXT,
    st.just("x" * 2_000_000),  # a huge value must not end up whole in the message
)


def _json(row: object) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def bad_lines(draw) -> tuple[str, bytes]:
    """One line of a JSON Lines file that the loader must reject, and what is wrong with it."""
    kind = draw(
        st.sampled_from(
            [
                "messages_not_list",
                "message_not_object",
                "unknown_role",
                "missing_role",
                "content_not_text",
                "no_assistant",
                "empty_conversation",
                "sharegpt_unknown_from",
                "alpaca_wrong_types",
                "problem_not_text",
                "text_empty_or_wrong",
                "row_not_object",
                "unknown_keys",
                "invalid_utf8",
                "truncated_json",
                "deeply_nested",
                "huge_integer",
                "huge_garbage",
            ]
        )
    )
    if kind == "messages_not_list":
        return kind, _json({"messages": draw(NOT_LIST)})
    if kind == "message_not_object":
        return kind, _json({"messages": [draw(NOT_TEXT.filter(lambda v: not isinstance(v, dict)))]})
    if kind == "unknown_role":
        turn = {"role": draw(BAD_ROLES), "content": "hi"}
        return kind, _json({"messages": [turn, {"role": "assistant", "content": "a"}]})
    if kind == "missing_role":
        return kind, _json({"messages": [{"content": "hi"}, {"role": "assistant", "content": "a"}]})
    if kind == "content_not_text":
        role = draw(st.sampled_from(["user", "assistant", "system"]))
        turns = [{"role": role, "content": draw(NOT_TEXT)}, {"role": "assistant", "content": "a"}]
        return kind, _json({"messages": turns})
    if kind == "no_assistant":
        turns = [{"role": "user", "content": draw(st.text(max_size=20))}]
        return kind, _json({"messages": turns * draw(st.integers(1, 3))})
    if kind == "empty_conversation":
        return kind, _json({draw(st.sampled_from(["messages", "conversations"])): []})
    if kind == "sharegpt_unknown_from":
        turns = [{"from": draw(BAD_ROLES), "value": "hi"}, {"from": "gpt", "value": "a"}]
        return kind, _json({"conversations": turns})
    if kind == "alpaca_wrong_types":
        row = {"instruction": "do it", "output": "done"}
        row[draw(st.sampled_from(["instruction", "output", "input", "system"]))] = draw(
            TRUTHY_NOT_TEXT
        )
        return kind, _json(row)
    if kind == "problem_not_text":
        return kind, _json({"problem": draw(NOT_TEXT), "generated_solution": "x"})
    if kind == "text_empty_or_wrong":
        return kind, _json({"text": draw(st.one_of(NOT_TEXT, st.sampled_from(["", "  \n "])))})
    if kind == "row_not_object":
        return kind, _json(draw(st.one_of(NOT_TEXT, st.text(max_size=10))))
    if kind == "unknown_keys":
        keys = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4))
        keys = [k for k in keys if k not in {"messages", "conversations", "text", "problem"}]
        return kind, _json({key: 1 for key in keys} or {"nothing": 1})
    if kind == "invalid_utf8":
        raw = _json(GOOD)
        cut = draw(st.integers(1, len(raw) - 1))
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80"]))
        return kind, raw[:cut] + junk + raw[cut:]
    if kind == "truncated_json":
        raw = _json(GOOD)
        return kind, raw[: draw(st.integers(1, len(raw) - 1))]
    if kind == "deeply_nested":  # deeper than Python's recursion limit
        depth = draw(st.integers(2_000, 200_000))
        return kind, b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "huge_integer":  # Python refuses to parse integers of more than 4300 digits
        return kind, b'{"messages": ' + b"9" * draw(st.integers(4_301, 100_000)) + b"}"
    # huge_garbage: megabytes on one line that are not a row
    size = draw(st.integers(1 << 20, 4 << 20))
    return kind, b'{"messages": "' + b"A" * size + draw(st.sampled_from([b"", b'"', b'"}x']))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=bad_lines(), before=st.integers(0, 3), after=st.integers(0, 2), crlf=st.booleans())
def test_fuzzed_bad_rows_name_file_and_line(tmp_path: Path, case, before, after, crlf):
    kind, line = case
    path = tmp_path / "data.jsonl"
    end = b"\r\n" if crlf else b"\n"
    rows = [_json(GOOD)] * before + [line] + [_json(GOOD)] * after
    path.write_bytes(end.join(rows) + end)
    with pytest.raises(TuneserveError) as caught:
        load_source(path, "auto", None, "fail", "fuzz")
    message = caught.value.message
    assert f"{path}:{before + 1}:" in message, (kind, message[:500])
    assert all(len(text) <= MAX_LINE for text in message.splitlines()), (kind, message[:500])
    assert caught.value.hint
    record("bad dataset rows rejected with file:line")


@pytest.mark.parametrize("content", [b"", b"\n", b"\n\n  \n", b"\r\n", b"\t"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_empty_files_are_named(tmp_path: Path, content: bytes, suffix: str):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    with pytest.raises(TuneserveError) as caught:
        load_source(path, "auto", None, "fail", "fuzz")
    assert str(path) in caught.value.message and caught.value.hint
    record("empty data files rejected by name")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, 10**6), junk=st.sampled_from([b"", b"\xff\xfe", b"]]]", b"\x00"]))
def test_broken_json_arrays_name_file_and_line(tmp_path: Path, cut: int, junk: bytes):
    text = json.dumps([GOOD, GOOD, GOOD], indent=1).encode()
    cut = 1 + cut % (len(text) - 1)
    path = tmp_path / "data.json"
    path.write_bytes(text[:cut] + junk)
    with pytest.raises(TuneserveError) as caught:
        load_source(path, "auto", None, "fail", "fuzz")
    first = caught.value.message.splitlines()[0]
    assert first.startswith(f"{path}:") and first.split(":")[1].isdigit(), first
    record("truncated JSON data files rejected with file:line")


def test_skip_mode_trains_on_the_good_rows_and_names_the_bad(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join([_json(GOOD), b'{"messages": [', b"\xff", _json(GOOD)]) + b"\n")
    examples, report = load_source(path, "auto", None, "skip", "fuzz")
    assert len(examples) == 2
    assert [bad.split(": ")[0] for bad in report.bad] == [f"{path}:2", f"{path}:3"]
