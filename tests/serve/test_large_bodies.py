"""A body over the gateway's limit gets a 413 the client can read, through a real uvicorn-served
gateway and the real openai client (which retries a connection reset, but not a 413)."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from serve.launcher import serve_models
from serve.model_source import ModelSource
from serve.protocol import MAX_BODY_BYTES


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    # the engine is never reached: a body over the limit is answered by the gateway
    source = ModelSource(name="fake", url="http://127.0.0.1:9")
    with serve_models([source], log_dir=tmp_path_factory.mktemp("logs")) as served:
        yield served


@pytest.mark.parametrize("megabytes", [9, 50])
def test_a_body_over_the_limit_is_a_readable_413_sent_once(gateway, megabytes):
    attempts = []
    http_client = httpx.Client(event_hooks={"request": [attempts.append]}, timeout=120)
    client = openai.OpenAI(base_url=gateway.base_url, api_key="none", http_client=http_client)
    text = "x" * (megabytes * 1024 * 1024)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": text}])
    assert caught.value.status_code == 413
    assert f"larger than {MAX_BODY_BYTES} bytes" in caught.value.body["message"]
    assert len(attempts) == 1  # the SDK retries resets (twice), never a 413
    http_client.close()


def test_a_chunked_body_over_the_limit_is_a_readable_413(gateway):
    """No content-length to judge by: the gateway reads up to the limit, then answers."""

    def pieces():
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    response = httpx.post(f"{gateway.base_url}/chat/completions", content=pieces(), timeout=120)
    assert response.status_code == 413 and response.json()["error"]["message"]


def _post_slowly(port: int, megabytes: int, connection: str) -> tuple[bytes, OSError | None]:
    """A client on a slow link: headers and 1 MB, a pause, then the rest; then it reads the
    answer (as HTTP clients do once their request is sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\nContent-Length: {megabytes << 20}\r\n"
        f"Connection: {connection}\r\n\r\n"
    )
    upload_error = None
    try:
        sock.sendall(head.encode() + b"x" * (1 << 20))
        time.sleep(0.5)
        for _ in range(megabytes - 1):
            sock.sendall(b"x" * (1 << 20))
    except OSError as exc:  # reset by the server while uploading
        upload_error = exc
    answer = b""
    try:
        while (chunk := sock.recv(65536)) and b"}}" not in answer:
            answer += chunk
    except OSError:
        pass
    sock.close()
    return answer, upload_error


def test_an_oversized_upload_is_read_to_its_end_before_the_413(gateway):
    """`Connection: close` is what HTTP/1.0 proxies (nginx's default proxy_pass) send: a
    gateway that answered at once and closed reset the upload mid-way."""
    port = int(gateway.base_url.rsplit(":", 1)[1].split("/")[0])
    answer, upload_error = _post_slowly(port, 50, "close")
    assert upload_error is None, f"the upload was cut: {upload_error!r}"
    assert answer.startswith(b"HTTP/1.1 413 ") and b"request_too_large" in answer


def test_the_gateway_still_serves_after_refusing_large_bodies(gateway):
    response = httpx.get(f"{gateway.base_url}/models", timeout=30)
    assert response.status_code == 200
