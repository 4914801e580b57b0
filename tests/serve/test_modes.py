"""Mode resolution and sampling defaults (SPEC §5), table-style."""

from __future__ import annotations

import pytest

from toolkit.core.modes import SAMPLING, apply_defaults, resolve_mode, split_alias


def chat(text: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("body", "alias", "server", "expected"),
    [
        (chat("hi"), None, "thinking", "thinking"),
        (chat("hi"), None, "chat", "chat"),
        (chat("hi"), "chat", "thinking", "chat"),
        (chat("hi"), "thinking", "chat", "thinking"),
        (chat("hi /no_think"), "thinking", "thinking", "chat"),
        (chat("/think hi"), "chat", "chat", "thinking"),
        (chat("a /think then /no_think"), None, "thinking", "chat"),
        (
            chat("hi /no_think", chat_template_kwargs={"enable_thinking": True}),
            None,
            "chat",
            "thinking",
        ),
        (
            chat("hi /think", chat_template_kwargs={"enable_thinking": False}),
            "thinking",
            "thinking",
            "chat",
        ),
        (chat("hi", chat_template_kwargs={"other": 1}), None, "chat", "chat"),
        (chat("no_think without slash"), None, "thinking", "thinking"),
        (
            {
                "messages": [
                    {"role": "user", "content": "old /no_think"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "new"},
                ]
            },
            None,
            "thinking",
            "thinking",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x /no_think"}]}]},
            None,
            "thinking",
            "chat",
        ),
        ({"prompt": "say /no_think"}, None, "thinking", "chat"),
        ({"prompt": ["a", "b"]}, None, "chat", "chat"),
    ],
)
def test_resolve_mode_first_match_wins(body, alias, server, expected):
    assert resolve_mode(body, alias, server) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("base", ("base", None)),
        ("base:thinking", ("base", "thinking")),
        ("base:chat", ("base", "chat")),
        ("org/model:v2", ("org/model:v2", None)),
        ("tuned:v2:chat", ("tuned:v2", "chat")),
    ],
)
def test_split_alias(model, expected):
    assert split_alias(model) == expected


@pytest.mark.parametrize("mode", ["thinking", "chat"])
def test_apply_defaults_fills_every_unset_field(mode):
    body, sent = apply_defaults(chat("hi"), mode)
    assert sent == SAMPLING[mode]
    for key, value in SAMPLING[mode].as_dict().items():
        assert body[key] == value


def test_apply_defaults_keeps_client_values_and_reports_them():
    original = chat("hi", temperature=0.1, top_k=5, min_p=None)
    body, sent = apply_defaults(original, "thinking")
    assert body["temperature"] == 0.1 and body["top_k"] == 5
    assert body["top_p"] == 0.95 and body["min_p"] == 0.0
    assert sent.header() == "temperature=0.1, top_p=0.95, top_k=5, min_p=0"
    assert "top_p" not in original  # the caller's dict is not changed


def test_header_of_defaults_matches_spec():
    assert apply_defaults({}, "thinking")[1].header() == (
        "temperature=0.6, top_p=0.95, top_k=20, min_p=0"
    )
    assert apply_defaults({}, "chat")[1].header() == "temperature=0.7, top_p=0.8, top_k=20, min_p=0"
