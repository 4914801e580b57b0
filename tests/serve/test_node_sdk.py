"""The official openai Node SDK works unchanged against the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve.conftest import API_KEY, REPO

pytestmark = pytest.mark.slow
NPM_PREFIX = REPO / ".venv" / "npm"  # git-ignored; `make install` fills it (see NODE_SDK)
NODE_SDK = "openai@6"


@pytest.fixture(scope="module")
def npm_prefix() -> Path:
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed"
    if not (NPM_PREFIX / "node_modules" / "openai").is_dir():
        NPM_PREFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", NODE_SDK],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NPM_PREFIX


def test_openai_node_sdk_plain_and_streaming(gateway, npm_prefix):
    script = Path(__file__).with_name("node_client.cjs")
    result = subprocess.run(
        ["node", str(script), str(npm_prefix), gateway.base_url, API_KEY, "smol"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["content"] and output["streamed"]
    assert output["mode"] == "chat"
    assert output["sampling"] == "temperature=0.7, top_p=0.8, top_k=20, min_p=0"
