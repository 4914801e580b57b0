"""Access: loopback by default, no open non-loopback bind, 401 for a missing or wrong key
(compared in constant time), model names that never reach a file, and a gateway that only
ever talks to the engines it started."""

from __future__ import annotations

import ast
import hmac
import inspect
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import serve.gateway
from tests.process_tree import descendants
from tests.reliability import processes
from tests.reliability.conftest import API_KEY, engine_stats
from tests.reliability.counts import record
from tests.reliability.test_fuzz_http import AUTH, CHAT, TRAVERSALS, check_openai_error

TUNESERVE = str(Path(sys.executable).parent / "tuneserve")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_default_bind_is_loopback(fake_gateway):
    from toolkit.cli.serve_command import serve_command

    defaults = {param.name: param.default for param in serve_command.params}
    assert defaults["host"] == "127.0.0.1"
    port = _port(fake_gateway.root_url)
    bound = [a for a in processes.listening_addresses(os.getpid()) if a.endswith(f":{port}")]
    assert bound == [f"127.0.0.1:{port}"]


@pytest.mark.slow
def test_tuneserve_serve_and_its_engine_listen_on_loopback_only(real_serve):
    listening = processes.listening_addresses(real_serve.pid)
    for child in descendants(real_serve.pid):
        listening |= processes.listening_addresses(child)
    assert listening and all(address.startswith("127.0.0.1:") for address in listening), listening


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.10", "example.com", ""])
def test_a_non_loopback_bind_without_a_key_is_refused(base_gguf, host, tmp_path):
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(tmp_path), "TUNESERVE_API_KEY": ""}
    command = [TUNESERVE, "serve", f"smol={base_gguf}", "--host", host, "--port", "1"]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: refusing to listen on") and "without an API key" in lines[0]
    assert lines[1].startswith("hint: ") and "--api-key" in lines[1] and len(lines) == 2
    assert time.monotonic() - started < 30  # refused before any engine was started
    assert not (tmp_path / "logs").exists()
    record("non-loopback binds without a key refused (exit 2)")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {API_KEY}", API_KEY,
     f"Bearer {API_KEY[:-1]}", f"Bearer {API_KEY}x", f"Bearer {API_KEY.upper()}",
     f"Bearer {API_KEY}\u00e9"],
)  # fmt: skip
@pytest.mark.parametrize("method,path", [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                         ("POST", "/v1/completions")])  # fmt: skip
def test_missing_or_wrong_key_is_401(fake_gateway, authorization, method, path):
    headers = {} if authorization is None else {"authorization": authorization}
    content = b'{"model": "fake", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}'
    response = httpx.request(
        method,
        fake_gateway.root_url + path,
        headers={k: v.encode("utf-8") for k, v in headers.items()},
        content=content if method == "POST" else None,
        timeout=10,
    )
    error = check_openai_error(response, 401)
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    record("requests with a missing or wrong key answered 401")


def test_the_right_key_passes(fake_gateway):
    response = httpx.get(f"{fake_gateway.base_url}/models", headers=AUTH, timeout=10)
    assert response.status_code == 200
    lower = {"authorization": f"bearer {API_KEY}"}  # the scheme is case-insensitive (RFC 7235)
    assert httpx.get(f"{fake_gateway.base_url}/models", headers=lower).status_code == 200


def test_the_key_is_compared_in_constant_time(fake_gateway, monkeypatch):
    """Behaviour: every check goes through hmac.compare_digest with the key as bytes; and the
    source never compares a key with `==`/`!=`/`in`, which return early on the first difference."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):  # noqa: ANN001, ANN202
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(serve.gateway.hmac, "compare_digest", spy)
    for given in ("wrong", API_KEY):
        httpx.get(f"{fake_gateway.base_url}/models", headers={"authorization": f"Bearer {given}"})
    assert calls == [(b"wrong", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]

    tree = ast.parse(inspect.getsource(serve.gateway))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            text = ast.unparse(node)
            nones = all(isinstance(c, ast.Constant) and c.value is None for c in node.comparators)
            keyish = "api_key" in text or "authorization" in text
            assert not keyish or nones, f"a key compared with {text}"


@pytest.mark.parametrize("model", TRAVERSALS)
def test_model_names_never_reach_a_file(fake_gateway, fake_engine, model):
    before = engine_stats(fake_engine)["requests"]
    response = httpx.post(
        f"{fake_gateway.base_url}/chat/completions", json={**CHAT, "model": model}, headers=AUTH
    )
    error = check_openai_error(response, 404)
    assert error["code"] == "model_not_found" and "root:" not in response.text
    assert engine_stats(fake_engine)["requests"] == before
    record("path-traversal model names answered 404")


@pytest.mark.parametrize(
    "target",
    ["/v1/../../etc/passwd", "/../../../../etc/passwd", "/v1/models/..%2f..%2fetc%2fpasswd",
     "/%2e%2e/%2e%2e/etc/passwd", "/v1/chat/completions/../../../etc/passwd", "//etc/passwd",
     "/v1/models/../../../proc/self/environ"],
)  # fmt: skip
def test_url_paths_never_reach_a_file(fake_gateway, target):
    """Raw request lines (a client library would normalise the dots away)."""
    status, body = _raw_request(fake_gateway.root_url, f"GET {target} HTTP/1.1")
    assert status == 404 and b'"error"' in body, (status, body[:200])
    assert b"root:" not in body and b"PATH=" not in body
    record("path-traversal URLs answered 404")


def _raw_request(root_url: str, request_line: str, headers: str = "", body: bytes = b"") -> tuple:
    port = _port(root_url)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"{request_line}\r\nHost: 127.0.0.1:{port}\r\n{headers}"
        head += f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n"
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def decoy(tmp_path_factory):
    """A second fake engine the gateway never started: nothing may ever reach it."""
    with processes.fake_engine(tmp_path_factory.mktemp("decoy") / "decoy.log") as child:
        yield child


def test_requests_cannot_redirect_the_gateway(fake_gateway, fake_engine, decoy):
    host = decoy.url.removeprefix("http://")
    fields = {"base_url": f"{decoy.url}/v1", "api_base": decoy.url, "url": decoy.url,
              "upstream": decoy.url, "engine_url": decoy.url, "host": host}  # fmt: skip
    headers = {**AUTH, "x-forwarded-host": host, "forwarded": f"host={host}",
               "x-upstream": decoy.url, "x-original-url": decoy.url, "x-real-ip": "127.0.0.1"}  # fmt: skip
    before = engine_stats(fake_engine)["requests"]
    response = httpx.post(
        f"{fake_gateway.base_url}/chat/completions", json={**CHAT, **fields}, headers=headers
    )
    assert response.status_code == 200, response.text
    # a Host header naming the decoy, and an absolute-form request target naming it
    body = b'{"model": "fake", "prompt": "hi", "max_tokens": 2}'
    status, _ = _raw_request(fake_gateway.root_url, "POST /v1/completions HTTP/1.1",
                             f"X-Forwarded-For: {host}\r\n", body)  # fmt: skip
    assert status == 200
    status, _ = _raw_request(fake_gateway.root_url, f"POST {decoy.url}/v1/completions HTTP/1.1",
                             "", body)  # fmt: skip
    assert status in (200, 400, 404)
    for model in (decoy.url, f"{decoy.url}/v1", host, f"fake@{host}"):
        response = httpx.post(
            f"{fake_gateway.base_url}/chat/completions", json={**CHAT, "model": model}, headers=AUTH
        )
        check_openai_error(response, 404)
    assert engine_stats(decoy)["requests"] == 0, (
        "the gateway connected to an engine it did not start"
    )
    assert engine_stats(fake_engine)["requests"] >= before + 2
    record("redirect attempts (body fields, headers, targets) that stayed put", 8)


@pytest.mark.slow
def test_tuneserve_serve_connects_only_to_its_engine(real_serve):
    """After traffic, every connection `tuneserve serve` holds is a client of its own gateway or
    its own engine's port; nothing else was dialled."""
    engine_ports = set()
    for child in descendants(real_serve.pid):
        engine_ports |= {a.rsplit(":", 1)[1] for a in processes.listening_addresses(child)}
    gateway_port = str(_port(real_serve.url))
    for _ in range(3):
        response = httpx.post(
            f"{real_serve.url}/v1/chat/completions",
            json={**CHAT, "model": "smol", "max_tokens": 2, "base_url": "http://10.0.0.1"},
            headers=AUTH,
            timeout=120,
        )
        assert response.status_code == 200, response.text
    # The native llama-server gets a connection per request (none is kept between requests):
    # sample the connections while requests are on their way.
    outbound: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for local, remote in processes.connections(real_serve.pid):
                if local.rsplit(":", 1)[1] != gateway_port:
                    outbound.add(remote)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(5):
            response = httpx.post(
                f"{real_serve.url}/v1/chat/completions",
                json={**CHAT, "model": "smol", "max_tokens": 64, "ignore_eos": True},
                headers=AUTH,
                timeout=120,
            )
            assert response.status_code == 200, response.text
    finally:
        done.set()
        sampler.join()
    assert outbound, "requests on their way hold engine connections"
    for remote in outbound:
        host, port = remote.rsplit(":", 1)
        assert host == "127.0.0.1" and port in engine_ports, (remote, engine_ports)
