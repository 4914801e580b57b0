"""Disk full during export: a one-line error, exit 2, and no artifact that looks complete.

The real thing runs on a small tmpfs (mounted here as root). Where mounting is impossible those
tests skip, and the simulated ones below still prove the same through an ENOSPC injected into
the atomic writers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.reliability.counts import record
from toolkit.core.artifacts import atomic_dir, atomic_write_json
from toolkit.core.errors import TuneserveError

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "toolkit" / "demo" / "recipe.yaml"
MiB = 2**20


def _mount_tmpfs(where: Path, size: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); simulated tests cover it")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator:
    """`small_disk(size)` mounts a tmpfs of `size` bytes and returns its path; unmounted after."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"disk-{len(mounted)}"
        _mount_tmpfs(where, size)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def tiny_run(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `tuneserve train` leaves it, with a small random LoRA (seconds, not a
    training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("runs") / "diskfull"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(base_model).save_pretrained(run / "adapter")
    shutil.copy(DEMO_RECIPE, run / "recipe.yaml")
    (run / "data").mkdir()
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]}
    (run / "data" / "heldout.jsonl").write_text(json.dumps(row) + "\n")
    return run


def _copy_run(source: Path, disk: Path, merged: Path | None = None) -> Path:
    """The run on the small disk; `merged`, when given, stands in as its finished merged16 (the
    base model itself: converting it costs the same, and no merge has to run first)."""
    from toolkit.export.run_export import adapter_fingerprint

    run = disk / "runs" / source.name
    run.mkdir(parents=True)
    for name in ("recipe.yaml", "adapter", "data"):
        copy = shutil.copytree if (source / name).is_dir() else shutil.copy
        copy(source / name, run / name)
    if merged is not None:
        shutil.copytree(merged, run / "merged16")
        # recorded as this adapter's merge, so export reuses it instead of merging again
        record = {"path": "x", "adapter": adapter_fingerprint(run / "adapter")}
        (run / "manifest.json").write_text(json.dumps({"exports": {"merged16": record}}))
    return run


def _export(run: Path, monkeypatch, *arguments: str) -> tuple[int, str]:
    """`tuneserve export RUN ...` in this process, with the up-front free-space check off: it
    stands for another writer filling the disk after the check passed."""
    from toolkit.cli import main
    from toolkit.export import run_export

    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(run.parent.parent))
    monkeypatch.setattr(run_export, "check_disk", lambda *args: None)
    result = CliRunner().invoke(main, ["export", str(run), *arguments])
    return result.exit_code, result.output


def _assert_one_clear_line(output: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no space left on device" in errors[0], output
    assert "Traceback" not in output and "hint: " in output


def _assert_nothing_half_written(run: Path, export_name: str) -> None:
    leftovers = [p for p in run.rglob(".*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    exports = json.loads((run / "manifest.json").read_text()).get("exports", {}) if (
        run / "manifest.json").is_file() else {}  # fmt: skip
    assert export_name not in exports


pytestmark = pytest.mark.slow


def test_a_disk_too_small_is_refused_before_writing(tiny_run, small_disk):
    disk = small_disk(_folder_size(tiny_run) + 32 * MiB)
    run = _copy_run(tiny_run, disk)
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(disk)}
    command = [sys.executable, "-m", "toolkit.cli", "export", str(run), "--format", "merged16"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: only ") and "free under" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "merged16").exists()
    record("disk too small: export refused before writing", group="faults survived")


def test_disk_full_while_writing_merged16(tiny_run, small_disk, monkeypatch):
    disk = small_disk(_folder_size(tiny_run) + 64 * MiB)  # merged16 needs ~270 MiB
    run = _copy_run(tiny_run, disk)
    code, output = _export(run, monkeypatch, "--format", "merged16")
    assert code == 2, output
    _assert_one_clear_line(output)
    assert not (run / "merged16").exists()
    _assert_nothing_half_written(run, "merged16")
    assert shutil.disk_usage(disk).used < _folder_size(run) + 8 * MiB  # the partial was removed
    record("disk full while writing merged16", group="faults survived")


def test_disk_full_while_converting_to_gguf(tiny_run, base_model, small_disk, monkeypatch):
    needed = _folder_size(base_model) + _folder_size(tiny_run)
    disk = small_disk(needed + 48 * MiB)  # q8_0 of SmolLM2 needs ~145 MiB
    run = _copy_run(tiny_run, disk, merged=base_model)
    code, output = _export(run, monkeypatch, "--format", "gguf", "--quant", "q8_0")
    assert code == 2, output
    _assert_one_clear_line(output)
    assert not list((run / "gguf").glob("*.gguf"))
    _assert_nothing_half_written(run, "gguf-q8_0")
    record("disk full while converting to GGUF", group="faults survived")


def test_disk_full_while_quantizing(tiny_run, base_model, small_disk, monkeypatch):
    weights = sum(p.stat().st_size for p in base_model.glob("*.safetensors"))
    f16 = weights // 2 + 40 * MiB  # fp32 -> f16, plus the vocabulary and metadata
    disk = small_disk(_folder_size(base_model) + _folder_size(tiny_run) + f16)
    run = _copy_run(tiny_run, disk, merged=base_model)
    code, output = _export(run, monkeypatch, "--format", "gguf", "--quant", "q4_k_m")
    assert code == 2, output
    _assert_one_clear_line(output)
    assert (run / "gguf" / f"{run.name}-f16.gguf").is_file(), "the f16 step should have fit"
    assert not (run / "gguf" / f"{run.name}-q4_k_m.gguf").exists()
    _assert_nothing_half_written(run, "gguf-q4_k_m")
    record("disk full while quantizing GGUF", group="faults survived")


# --- simulated ENOSPC: no mount needed ------------------------------------------------------


class _FillingWriter:
    """A file object that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int) -> None:  # noqa: ANN001
        self.handle, self.room = handle, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.handle, name)

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def test_simulated_enospc_in_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    import toolkit.core.artifacts as artifacts

    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"version": 1})
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        artifacts.os, "fdopen", lambda fd, mode: _FillingWriter(real_fdopen(fd, mode), 5)
    )
    with pytest.raises(TuneserveError) as caught:
        atomic_write_json(target, {"version": 2, "padding": "x" * 1000})
    assert "no space left on device" in caught.value.message and str(target) in caught.value.message
    assert "\n" not in caught.value.message
    assert json.loads(target.read_text()) == {"version": 1}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp left
    record("simulated ENOSPC in an atomic write", group="faults survived")


def test_simulated_enospc_in_an_atomic_folder_keeps_the_old_folder(tmp_path):
    final = tmp_path / "merged16"
    with atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("{}")
    with pytest.raises(TuneserveError, match="no space left on device"), atomic_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x" * 100)
        # what safetensors raises: its Rust IoError, as text
        raise RuntimeError(f"Error while serializing: IoError(Os {{ code: 28, kind: StorageFull, "
                           f"message: \"No space left on device\" }}) {uuid.uuid4()}")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged16"]
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]
    record("simulated ENOSPC in an atomic folder", group="faults survived")
