"""/health and /metrics name the served models: open on loopback, behind the key on a public
bind (unless --public-metrics), through a real uvicorn-served gateway."""

from __future__ import annotations

import httpx
import pytest

from serve.launcher import serve_models
from serve.model_source import ModelSource

KEY = "status-key"
SOURCE = ModelSource(name="secret-project-model", url="http://127.0.0.1:9")


def _status(served, path: str, key: str | None = None) -> httpx.Response:
    port = served.base_url.rsplit(":", 1)[1].split("/")[0]
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=30)


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_a_public_bind_with_a_key_keeps_status_behind_the_key(tmp_path, path):
    with serve_models([SOURCE], host="0.0.0.0", api_key=KEY, log_dir=tmp_path) as served:
        refused = _status(served, path)
        assert refused.status_code == 401 and "secret-project-model" not in refused.text
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert _status(served, path, "wrong").status_code == 401
        allowed = _status(served, path, KEY)
        assert allowed.status_code == 200 and "secret-project-model" in allowed.text


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_public_metrics_and_loopback_leave_status_open(tmp_path, path):
    with serve_models(
        [SOURCE], host="0.0.0.0", api_key=KEY, public_metrics=True, log_dir=tmp_path
    ) as served:
        assert _status(served, path).status_code == 200
    with serve_models([SOURCE], api_key=KEY, log_dir=tmp_path) as served:  # 127.0.0.1
        assert _status(served, path).status_code == 200


def test_serve_has_the_public_metrics_flag():
    from toolkit.cli.serve_command import serve_command

    flag = next(p for p in serve_command.params if p.name == "public_metrics")
    assert flag.is_flag and flag.opts == ["--public-metrics"]
