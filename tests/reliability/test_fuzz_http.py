"""Fuzzed bad HTTP requests against the real gateway: each gets a 4xx with OpenAI-shaped error
JSON, never a 500, and none reaches the engine. Most run in front of the fast fake engine; a
handful in front of real llama.cpp (`tuneserve serve` on the embedded SmolLM2)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.protocol import validate_request
from tests.reliability.conftest import API_KEY, engine_stats
from tests.reliability.counts import record
from toolkit.core.modes import split_alias

AUTH = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION = {"model": "fake", "prompt": "hi", "max_tokens": 4}
ERROR_TYPES = {"invalid_request_error", "authentication_error", "not_found_error"}
TEN_MB = 10 * 1024 * 1024
TRAVERSALS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "fake/../../etc/passwd",
    "file:///etc/passwd",
    "fake\x00",
    "../fake",
    "./fake",
    "FAKE",
    " fake",
    "fake:../../etc/passwd",
    "http://127.0.0.1:1/v1",
    "..\\..\\windows\\win.ini",
]

NOT_TEXT = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.just([]), st.just({})
)
NOT_NUMBER = st.one_of(
    st.text(max_size=5), st.booleans(), st.just([1]), st.just({"v": 1}), st.just("1")
)
NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"])
# A value outside its bounds, per numeric field (inside-bounds values are valid requests).
OUT_OF_RANGE = {
    "temperature": st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    "top_p": st.floats(min_value=1.0001, max_value=1e300) | st.floats(max_value=-1e-9, min_value=-1e300),
    "min_p": st.floats(min_value=1.0001, max_value=1e300) | st.floats(max_value=-1e-9, min_value=-1e300),
    "top_k": st.integers(max_value=-2) | st.just(2.5),
    "max_tokens": st.integers(max_value=0) | st.integers(min_value=2**31) | st.just(3.5),
    "max_completion_tokens": st.integers(max_value=0),
    "n": st.integers(max_value=0) | st.integers(min_value=129),
    "seed": st.just(0.5),
    "presence_penalty": st.floats(min_value=2.001, max_value=1e300),
    "frequency_penalty": st.floats(max_value=-2.001, min_value=-1e300),
    "top_logprobs": st.integers(min_value=21) | st.integers(max_value=-1),
}  # fmt: skip
BAD_MESSAGES = st.one_of(
    NOT_TEXT.filter(lambda v: v != []),
    st.just([]),
    st.lists(NOT_TEXT.filter(lambda v: v != {}), min_size=1, max_size=2),
    st.builds(lambda role: [{"role": role, "content": "hi"}], st.text(max_size=12).filter(
        lambda r: r not in {"system", "developer", "user", "assistant", "tool", "function"})),
    st.just([{"content": "no role"}]),
    st.builds(lambda role: [{"role": role, "content": "hi"}], NOT_TEXT.filter(lambda v: v is not None)),
    st.builds(lambda c: [{"role": "user", "content": c}], st.one_of(
        st.integers(), st.booleans(), st.just({}), st.just([1]), st.just([{"text": "no type"}]))),
)  # fmt: skip
BAD_PROMPTS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.just({}), st.just([]), st.just([True]),
    st.just([{"a": 1}]), st.just([[1, "x"]]),
)  # fmt: skip
WRONG_TYPES = {
    "stop": st.one_of(st.integers(), st.just({}), st.just([1]), st.just([None])),
    "stream": st.one_of(st.text(max_size=4), st.integers(), st.just([])),
    "chat_template": st.one_of(st.integers(), st.just([]), st.just({})),
    "chat_template_kwargs": st.one_of(
        st.text(max_size=4), st.integers(), st.just([]),
        st.builds(lambda v: {"enable_thinking": v}, st.one_of(st.text(max_size=3), st.integers())),
    ),
    "response_format": st.one_of(st.text(max_size=4), st.integers(), st.just([])),
}  # fmt: skip


def _body_bytes(body: dict, raw: dict[str, str] | None = None) -> bytes:
    """JSON of `body`; `raw` fields are spliced in as literal JSON text (NaN, 1e999, ...)."""
    text = json.dumps(body)
    for key, literal in (raw or {}).items():
        text = text[:-1] + f', "{key}": {literal}}}'
    return text.encode()


@st.composite
def bad_requests(draw) -> tuple[str, bytes, dict[str, str], int, str]:
    """(path, body, headers, expected status, kind) of one request with one thing wrong."""
    chat = draw(st.booleans())
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = dict(CHAT if chat else COMPLETION, stream=draw(st.booleans()))
    kind = draw(
        st.sampled_from(
            ["model_type", "unknown_model", "content", "number_type", "number_range",
             "non_finite", "wrong_type", "truncated", "invalid_utf8", "not_object",
             "deep", "huge_int", "ten_mb", "auth"]
        )
    )  # fmt: skip
    headers, status = dict(AUTH), 400
    raw: dict[str, str] = {}
    if kind == "model_type":
        body["model"] = draw(NOT_TEXT)
    elif kind == "unknown_model":
        name = draw(st.one_of(st.sampled_from(TRAVERSALS), st.text(max_size=40)))
        if name == "fake" or split_alias(name)[0] == "fake":
            name = f"../{name}"
        body["model"], status = name, 404
    elif kind == "content":
        if chat:
            body["messages"] = draw(BAD_MESSAGES)
        else:
            body["prompt"] = draw(BAD_PROMPTS)
    elif kind == "number_type":
        body[draw(st.sampled_from(sorted(OUT_OF_RANGE)))] = draw(NOT_NUMBER)
    elif kind == "number_range":
        key = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        body[key] = draw(OUT_OF_RANGE[key])
    elif kind == "non_finite":
        raw[draw(st.sampled_from(["temperature", "top_p", "max_tokens", "min_p"]))] = draw(
            NON_FINITE
        )
    elif kind == "wrong_type":
        key = draw(st.sampled_from(sorted(WRONG_TYPES)))
        body[key] = draw(WRONG_TYPES[key])
        if key == "stream" and body[key] is None:
            body[key] = "no"
    elif kind == "truncated":
        text = _body_bytes(body)
        return path, text[: draw(st.integers(0, len(text) - 1))], headers, 400, kind
    elif kind == "invalid_utf8":
        text = _body_bytes(body)
        at = text.index(b'"hi"') + 2
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"]))
        return path, text[:at] + junk + text[at:], headers, 400, kind
    elif kind == "not_object":
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=5)))
        return path, json.dumps(value).encode(), headers, 400, kind
    elif kind == "deep":
        depth = draw(st.integers(5_000, 100_000))
        raw["metadata"] = "[" * depth + "]" * depth
    elif kind == "huge_int":
        raw["seed"] = "9" * draw(st.integers(4_301, 20_000))
    elif kind == "ten_mb":
        key = "messages" if chat else "prompt"
        filler = "a" * (TEN_MB + draw(st.integers(0, 1024)))
        body[key] = [{"role": "user", "content": filler}] if chat else filler
        status = 413
    else:  # auth: no key, a wrong one, the wrong scheme, the right key's prefix
        given = draw(st.sampled_from(["", "Bearer wrong", f"Basic {API_KEY}", "Bearer " +
                                      API_KEY[:-1], f"Bearer {API_KEY}x", "Bearer", API_KEY]))  # fmt: skip
        headers = {"content-type": "application/json"}
        if given:
            headers["authorization"] = given
        status = 401
    return path, _body_bytes(body, raw), headers, status, kind


def check_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in ERROR_TYPES, error
    return error


def test_fuzzed_bad_requests_get_openai_shaped_4xx(fake_gateway, fake_engine):
    reached_before = engine_stats(fake_engine)["requests"]
    client = httpx.Client(base_url=fake_gateway.root_url, timeout=60)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=bad_requests(), chunked=st.booleans())
    def one(case, chunked: bool) -> None:
        path, content, headers, status, kind = case
        # chunked: no Content-Length, so the size limit must hold while reading
        sent = iter([content[i : i + 65536] for i in range(0, len(content), 65536)])
        response = client.post(path, content=sent if chunked else content, headers=headers)
        error = check_openai_error(response, status)
        if status == 404:
            assert error["param"] == "model" and error["code"] == "model_not_found"
        record("bad HTTP requests answered 4xx, OpenAI-shaped (fake engine)")

    try:
        one()
    finally:
        client.close()
    assert engine_stats(fake_engine)["requests"] == reached_before, "a bad request was forwarded"


def test_good_requests_still_pass_after_the_fuzz(fake_gateway):
    """The checks are not so strict that valid requests fail: every bound's edge is accepted."""
    edges = {"temperature": 0, "top_p": 1, "min_p": 0, "top_k": -1, "n": 1, "seed": -5,
             "presence_penalty": 2, "frequency_penalty": -2, "max_tokens": 3, "stream": None,
             "chat_template_kwargs": {"enable_thinking": False}, "stop": ["x"], "logprobs": True,
             "top_logprobs": 0}  # fmt: skip
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    for path, body in [
        ("/v1/chat/completions", {**CHAT, **edges}),
        ("/v1/chat/completions", {**CHAT, "messages": parts, "model": "fake:chat"}),
        ("/v1/completions", {**COMPLETION, "prompt": [[1, 2, 3]], "max_tokens": 3.0}),
    ]:
        response = httpx.post(fake_gateway.root_url + path, json=body, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        record("valid requests served next to the fuzz", group="requests served")
    validate_request({**CHAT, "max_tokens": 2**31 - 1}, chat=True)  # the largest int32


def test_a_lone_surrogate_never_reaches_the_engine(fake_gateway, fake_engine):
    """JSON may escape one half of a surrogate pair; that is not text, and is refused."""
    before = engine_stats(fake_engine)["requests"]
    for path, content in [
        (
            "/v1/chat/completions",
            r'{"model": "fake", "messages": [{"role": "user", "content": "a\ud800"}]}',
        ),
        ("/v1/completions", r'{"model": "fake", "prompt": "\udfff", "max_tokens": 2}'),
        (
            "/v1/chat/completions",
            r'{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stop": ["\ud83d"]}',
        ),
    ]:
        response = httpx.post(
            fake_gateway.root_url + path, content=content, headers=AUTH, timeout=30
        )
        assert "surrogate" in check_openai_error(response, 400)["message"]
        record("bad HTTP requests answered 4xx, OpenAI-shaped (fake engine)")
    assert engine_stats(fake_engine)["requests"] == before, "a lone surrogate was forwarded"
    # a whole pair, escaped, is an emoji: it goes through
    pair = r'{"model": "fake", "messages": [{"role": "user", "content": "\ud83d\ude00"}]}'
    ok = httpx.post(fake_gateway.root_url + "/v1/chat/completions", content=pair, headers=AUTH)
    assert ok.status_code == 200 and engine_stats(fake_engine)["requests"] == before + 1


# The handful against real llama.cpp: what the engine itself would turn into a 500 or a hang.
REAL_CASES = [
    ({**CHAT, "model": "smol", "max_tokens": -1}, 400),
    ({**CHAT, "model": "smol", "max_tokens": 0}, 400),
    ({**CHAT, "model": "smol", "max_tokens": 2**40}, 400),
    ({**CHAT, "model": "smol", "temperature": "hot"}, 400),
    ({**CHAT, "model": "smol", "messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ({**CHAT, "model": "smol", "messages": [{"role": "user", "content": [1, 2]}]}, 400),
    ({**CHAT, "model": "smol", "logit_bias": "x"}, 400),
    ({**CHAT, "model": "smol", "chat_template_kwargs": {"enable_thinking": "maybe"}}, 400),
    ({**COMPLETION, "model": "smol", "prompt": [True]}, 400),
    ({**CHAT, "model": "../../etc/passwd"}, 404),
    ({**CHAT, "model": "/etc/passwd"}, 404),
    ({**CHAT, "model": "smol", "messages": [{"role": "user", "content": "a" * TEN_MB}]}, 413),
]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "status"), REAL_CASES)
def test_bad_requests_against_real_llama_cpp(real_serve, body, status):
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    response = httpx.post(real_serve.url + path, json=body, headers=AUTH, timeout=120)
    check_openai_error(response, status)
    record("bad HTTP requests answered 4xx, OpenAI-shaped (llama.cpp)")


@pytest.mark.slow
@pytest.mark.parametrize(
    "content", [b'{"model": "smol", "messages": [', b'{"model": "smol\xff"}', b"[1, 2]"]
)
def test_broken_bodies_against_real_llama_cpp(real_serve, content):
    response = httpx.post(
        real_serve.url + "/v1/chat/completions", content=content, headers=AUTH, timeout=60
    )
    check_openai_error(response, 400)
    record("bad HTTP requests answered 4xx, OpenAI-shaped (llama.cpp)")
    ok = httpx.post(
        real_serve.url + "/v1/chat/completions",
        json={**CHAT, "model": "smol", "max_tokens": 2},
        headers=AUTH,
        timeout=120,
    )
    assert ok.status_code == 200, ok.text
    record("valid requests served next to the fuzz", group="requests served")
