"""The served model's identity: the run manifest's sha256 when it is up to date, else a cheap
path/size/mtime one that changes when a file is rewritten; shown in /v1/models."""

from __future__ import annotations

import json
import os

import httpx

from serve.identity import model_identity
from serve.launcher import serve_models
from tests.serve.test_vllm_launch import _adapter, _folder, fake_vllm  # noqa: F401 (fixture)
from toolkit.core.artifacts import sha256_file, update_manifest


def _run_with_gguf(tmp_path, content: bytes = b"GGUF weights"):
    run = tmp_path / "runs" / "r"
    (run / "gguf").mkdir(parents=True)
    gguf = run / "gguf" / "r-q8_0.gguf"
    gguf.write_bytes(content)
    update_manifest(run)  # what export does after writing each file
    return run, gguf


def test_a_run_file_takes_its_sha256_from_the_manifest(tmp_path):
    _, gguf = _run_with_gguf(tmp_path)
    identity = model_identity(gguf)
    assert identity.source == "manifest"
    assert identity.value == f"sha256:{sha256_file(gguf)}"


def test_a_file_changed_after_its_manifest_falls_back_to_stat(tmp_path):
    run, gguf = _run_with_gguf(tmp_path)
    before = model_identity(gguf)
    gguf.write_bytes(b"GGUF other weights")  # re-exported in place, manifest not updated
    stamp = (run / "manifest.json").stat().st_mtime_ns + 10**9
    os.utime(gguf, ns=(stamp, stamp))
    after = model_identity(gguf)
    assert after.source == "stat" and after.value != before.value
    os.utime(gguf, ns=(stamp + 10**9, stamp + 10**9))  # touched again: a new identity
    assert model_identity(gguf).value != after.value


def test_a_file_without_a_manifest_gets_a_stat_identity(tmp_path):
    model = tmp_path / "base.gguf"
    model.write_bytes(b"weights")
    first = model_identity(model)
    assert first.source == "stat" and first.value.startswith("stat:")
    assert model_identity(model) == first  # stable while nothing changes
    other = tmp_path / "other.gguf"
    other.write_bytes(b"weights")
    assert model_identity(other).value != first.value  # another file, another model


def test_a_folder_and_its_adapters_each_have_one(tmp_path):
    run = tmp_path / "runs" / "r"
    (run / "merged16").mkdir(parents=True)
    (run / "merged16" / "model.safetensors").write_bytes(b"w")
    (run / "merged16" / "config.json").write_text("{}")
    update_manifest(run)
    merged = model_identity(run / "merged16")
    assert merged.source == "manifest"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with_adapter = model_identity(run / "merged16", (adapter,))
    assert with_adapter.value != merged.value and with_adapter.source == "stat"


def test_v1_models_shows_each_served_models_identity(tmp_path, fake_vllm):  # noqa: F811
    base = _folder(tmp_path, "base")
    adapter = _adapter(tmp_path, "a1", 16)
    with serve_models(
        [f"base={base}"], engine="vllm", lora=[f"tuned={adapter}"], log_dir=tmp_path / "logs"
    ) as served:
        listed = httpx.get(f"{served.base_url}/models", timeout=30).json()["data"]
    by_id = {entry["id"]: entry for entry in listed}
    assert by_id["base"]["identity"] == model_identity(base).value
    assert by_id["base"]["identity_source"] == "stat"
    assert by_id["tuned"]["identity"] == model_identity(base, (adapter,)).value
    assert by_id["tuned:chat"]["identity"] == by_id["tuned"]["identity"]
    assert by_id["base"]["identity"] != by_id["tuned"]["identity"]
