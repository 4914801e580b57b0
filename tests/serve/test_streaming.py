"""Chat streams: a think block is split out, then the engine's bytes pass through untouched."""

from __future__ import annotations

import asyncio
import json

from serve.streaming import chat_events


def _event(content: str, finish: str | None = None, sep: str = "\n") -> bytes:
    chunk = {
        "id": "c",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    # compact JSON, unlike the gateway's own encoding: a rewritten chunk shows
    return f"data: {json.dumps(chunk, separators=(',', ':'))}{sep}{sep}".encode()


def _collect(pieces: list[bytes], **flags: bool) -> list[bytes]:
    async def source():  # noqa: ANN202
        for piece in pieces:
            yield piece

    options = {"rendered": False, "in_reasoning": False, "thinking_closed": False}
    options["single_choice"] = True

    async def run() -> list[bytes]:
        return [out async for out in chat_events(source(), **{**options, **flags})]

    return asyncio.run(run())


def _deltas(out: list[bytes]) -> list[dict]:
    text = b"".join(out).decode().replace("\r\n", "\n")
    events = [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]
    return [json.loads(e)["choices"][0]["delta"] for e in events if e != "[DONE]"]


def test_reasoning_is_split_then_the_rest_passes_through_as_sent():
    tail = [_event(" answer"), _event(" more", "stop"), b"data: [DONE]\n\n"]
    out = _collect([_event("<think>"), _event("hm"), _event("</think>"), _event("Hi"), *tail])
    deltas = _deltas(out)
    assert "".join(d.get("reasoning") or "" for d in deltas) == "hm"
    assert all(d.get("reasoning") == d.get("reasoning_content") for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == "Hi answer more"
    assert out[-3:] == tail  # after the think block: the engine's bytes, unparsed


def test_a_plain_answer_passes_through_after_its_first_chunk():
    pieces = [_event("Hello", sep="\r\n"), _event(" world", sep="\r\n"), b"data: [DONE]\r\n\r\n"]
    out = _collect(pieces)
    assert out[1:] == pieces[1:]
    assert "".join(d["content"] for d in _deltas(out)) == "Hello world"


def test_a_think_tag_cut_across_pieces_still_splits():
    whole = _event("<think>why</think>ok")
    out = _collect([whole[:20], whole[20:31], whole[31:]])
    delta = _deltas(out)
    assert "".join(d.get("reasoning") or "" for d in delta) == "why"
    assert "".join(d.get("content") or "" for d in delta) == "ok"


def test_several_choices_are_always_rewritten():
    pieces = [_event("Hello"), _event(" x")]
    out = _collect(pieces, single_choice=False)
    assert out[1] != pieces[1] and _deltas(out)[1] == {"content": " x"}
