"""Splitting <think> text into reasoning and content, whole and streamed."""

from __future__ import annotations

import pytest

from serve.reasoning import ChunkSplitter, ThinkSplitter, split_chat_response, split_text

TEXT = "<think>\nLet me add 2 and 2.\n</think>\n\nThe answer is 4."


@pytest.mark.parametrize(
    ("text", "in_reasoning", "expected"),
    [
        (TEXT, False, ("Let me add 2 and 2.\n", "The answer is 4.")),
        ("plain answer", False, (None, "plain answer")),
        ("  <think>x</think>y", False, ("x", "y")),
        ("<think></think>answer", False, ("", "answer")),
        ("<think>\n\n</think>\n\nanswer", False, ("", "answer")),
        ("<think>never closed", False, ("never closed", "")),
        ("<thi", False, (None, "<thi")),
        ("answer with <think> later", False, (None, "answer with <think> later")),
        ("reasoning only</think>answer", True, ("reasoning only", "answer")),
        ("", False, (None, "")),
    ],
)
def test_split_text(text, in_reasoning, expected):
    assert split_text(text, in_reasoning) == expected


def _stream(pieces: list[str], in_reasoning: bool = False) -> tuple[str, str]:
    splitter = ThinkSplitter(in_reasoning=in_reasoning)
    reasoning, content = "", ""
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning += r
        content += c
    r, c = splitter.flush()
    return reasoning + r, content + c


@pytest.mark.parametrize("cut", range(len(TEXT) + 1))
def test_every_single_cut_splits_the_same(cut):
    assert _stream([TEXT[:cut], TEXT[cut:]]) == ("Let me add 2 and 2.\n", "The answer is 4.")


@pytest.mark.parametrize("cut", range(1, 6))
def test_every_character_alone_and_small_pieces(cut):
    pieces = [TEXT[i : i + cut] for i in range(0, len(TEXT), cut)]
    assert _stream(pieces) == ("Let me add 2 and 2.\n", "The answer is 4.")


def test_reasoning_is_not_held_longer_than_a_possible_tag():
    splitter = ThinkSplitter()
    assert splitter.feed("<think>abc</th") == ("abc", "")
    assert splitter.feed("ink>ok") == ("", "ok")


def test_chat_response_carries_both_names():
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}}]}
    message = split_chat_response(response)["choices"][0]["message"]
    assert message["reasoning_content"] == message["reasoning"] == "Let me add 2 and 2.\n"
    assert message["content"] == "The answer is 4."


@pytest.mark.parametrize("name", ["reasoning", "reasoning_content"])
def test_engine_parsed_reasoning_is_mirrored(name):
    response = {"choices": [{"index": 0, "message": {"content": "4", name: "think"}}]}
    message = split_chat_response(response)["choices"][0]["message"]
    assert message["reasoning"] == message["reasoning_content"] == "think"
    assert message["content"] == "4"


def test_chunk_splitter_streams_with_a_tag_cut_across_chunks():
    pieces = ["<thi", "nk>\nhm", "m</thi", "nk>\n\nfo", "ur"]
    splitter = ChunkSplitter()
    reasoning, content = "", ""
    for piece in pieces:
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        delta = splitter.rewrite(chunk)["choices"][0]["delta"]
        reasoning += delta.get("reasoning") or ""
        assert delta.get("reasoning") == delta.get("reasoning_content")
        content += delta.get("content") or ""
    final = splitter.rewrite({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    content += final["choices"][0]["delta"].get("content") or ""
    assert (reasoning, content) == ("hmm", "four")


def test_chunk_splitter_mirrors_engine_reasoning_deltas():
    chunk = {"choices": [{"index": 0, "delta": {"reasoning": "x"}, "finish_reason": None}]}
    delta = ChunkSplitter().rewrite(chunk)["choices"][0]["delta"]
    assert delta == {"reasoning": "x", "reasoning_content": "x"}


def test_a_prompt_that_closed_thinking_leaves_everything_as_content():
    assert split_text("<think>x</think>y", thinking_closed=True) == (None, "<think>x</think>y")
