"""The run manifest: every file's sha256, read once per change of the file (a run folder's
manifest is refreshed after each stage, and a 28 GB merged model must not be re-read each time)."""

from __future__ import annotations

import os

import pytest

from toolkit.core import artifacts
from toolkit.core.artifacts import read_manifest, update_manifest, verify_manifest


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The names of the files sha256 was computed of, in order."""
    seen: list[str] = []
    real = artifacts.sha256_file

    def counting(path, chunk=1 << 20):  # noqa: ANN001
        seen.append(path.name)
        return real(path, chunk)

    monkeypatch.setattr(artifacts, "sha256_file", counting)
    return seen


def test_a_file_is_hashed_once_until_it_changes(tmp_path, hashed):
    (tmp_path / "weights.bin").write_bytes(b"w" * 4096)
    (tmp_path / "config.json").write_text("{}")
    update_manifest(tmp_path, stage="train")
    assert sorted(hashed) == ["config.json", "weights.bin"]

    hashed.clear()
    (tmp_path / "report.md").write_text("new")
    update_manifest(tmp_path, stage="export")
    assert hashed == ["report.md"]  # the unchanged files keep their hashes

    hashed.clear()
    weights = tmp_path / "weights.bin"
    before = weights.stat()
    weights.write_bytes(b"x" * 4096)  # same size, new bytes
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    update_manifest(tmp_path, stage="eval")
    assert hashed == ["weights.bin"]
    assert read_manifest(tmp_path)["files"]["weights.bin"]["sha256"] == artifacts.sha256_file(
        weights
    )


def test_verify_reads_every_file_unless_told_to_trust_unchanged_ones(tmp_path, hashed):
    (tmp_path / "weights.bin").write_bytes(b"w" * 4096)
    update_manifest(tmp_path)
    hashed.clear()
    assert verify_manifest(tmp_path) == [] and hashed == ["weights.bin"]
    hashed.clear()
    assert verify_manifest(tmp_path, trust_unchanged=True) == [] and hashed == []

    # Bytes changed in place with the old time put back: only a full read sees it.
    weights = tmp_path / "weights.bin"
    stamp = weights.stat()
    weights.write_bytes(b"x" * 4096)
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert verify_manifest(tmp_path, trust_unchanged=True) == []
    assert verify_manifest(tmp_path) == ["weights.bin: sha256 differs from the manifest"]
    weights.write_bytes(b"x" * 10)
    assert verify_manifest(tmp_path, trust_unchanged=True) == [
        "weights.bin: size differs from the manifest"
    ]


def test_many_changed_files_hash_in_parallel_to_the_same_digests(tmp_path):
    import hashlib

    for index in range(12):  # more files than threads on a 2-core machine
        (tmp_path / f"model-{index:05d}.safetensors").write_bytes(
            os.urandom(3 << 20) + b"%d" % index
        )
    manifest = update_manifest(tmp_path, stage="export")
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
    assert list(manifest["files"]) == sorted(manifest["files"])  # order kept for stable JSON

    shard = tmp_path / "model-00007.safetensors"
    data = bytearray(shard.read_bytes())
    data[12345] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert verify_manifest(tmp_path) == [
        "model-00007.safetensors: sha256 differs from the manifest"
    ]
