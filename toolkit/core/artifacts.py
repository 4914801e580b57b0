"""Where artifacts live, how they are written (temp + rename) and how they are fingerprinted."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolkit.core.errors import TuneserveError

MODELS_DIR_ENV = "TUNESERVE_MODELS_DIR"
BASE_DIR_ENV = "TUNESERVE_BASE_DIR"
MANIFEST = "manifest.json"


def models_dir() -> Path:
    """`models/` under the working directory, or $TUNESERVE_MODELS_DIR."""
    return Path(os.environ.get(MODELS_DIR_ENV, "models")).resolve()


def base_models_dir() -> Path:
    """Materialized base models: `models/base/`, or $TUNESERVE_BASE_DIR (tests share one cache)."""
    override = os.environ.get(BASE_DIR_ENV)
    return Path(override).resolve() if override else models_dir() / "base"


def run_dir(name: str) -> Path:
    return models_dir() / "runs" / name


DISK_FULL_SIGNS = ("No space left on device", "StorageFull", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, as an OSError or as the text of writers that wrap it (safetensors' Rust
    IoError, the GGUF converter's stderr)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(sign in str(exc) for sign in DISK_FULL_SIGNS)


# Less free space than this beside a writer's partial output, when the writer failed, means it
# ran out of disk: writers write blocks of MiBs, and a failed write leaves the disk all but full.
DISK_FULL_SLACK = 16 * 2**20


def ran_out_of_disk(folder: Path, output: str = "") -> bool:
    """For writers that do not say ENOSPC (numpy's "N requested and M written", llama.cpp's
    quantizer, which logs to stderr only): call before their partial output is removed."""
    if any(sign in output for sign in DISK_FULL_SIGNS):
        return True
    return shutil.disk_usage(folder).free < DISK_FULL_SLACK


def disk_full_error(path: Path) -> TuneserveError:
    """The one-line error for a write that ran out of disk (its partial output already removed)."""
    return TuneserveError(
        f"no space left on device while writing {path}; nothing partial was kept",
        "free some disk space (or point TUNESERVE_MODELS_DIR at a larger disk) and re-run",
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final` in one rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755 & ~_umask())
        for inner in tmp.rglob("*"):
            if inner.is_file():
                os.chmod(inner, 0o644 & ~_umask())
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc) and not isinstance(exc, TuneserveError):
            raise disk_full_error(final) from exc
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files and folders a killed process left behind (they start with '.' and end in .tmp)."""
    if not folder.is_dir():
        return
    for leftover in folder.glob(".*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held across processes (two commands materializing the same model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> dict[Path, str]:
    """sha256 of several files at once, one thread each up to the CPU count: hashlib releases
    the GIL on large blocks, so a 14B model's shards hash in parallel (1 GiB/s per core)."""
    from concurrent.futures import ThreadPoolExecutor

    if len(paths) <= 1:
        return {path: sha256_file(path) for path in paths}
    workers = min(len(paths), os.cpu_count() or 1, 16)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(sha256_file, paths), strict=True))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_entries(
    folder: Path, known: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `folder` (relative paths), skipping the manifest.

    A file whose size and modification time match its entry in `known` keeps that entry's
    hash instead of being read again: a run folder's manifest is refreshed after every stage,
    and re-reading a 28 GB merged model each time would cost minutes for nothing.
    """
    known = known or {}
    entries, changed = {}, {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if rel == MANIFEST or any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue
        stat = file.stat()
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        before = known.get(rel, {})
        if all(before.get(key) == value for key, value in entry.items()):
            entries[rel] = {"sha256": before["sha256"], **entry}
        else:
            entries[rel], changed[rel] = entry, file
    for rel, digest in zip(changed, sha256_files(list(changed.values())).values(), strict=True):
        entries[rel] = {"sha256": digest, **entries[rel]}
    return entries


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def update_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the manifest and refresh every file's hash."""
    manifest = read_manifest(folder)
    manifest.update(fields)
    manifest["files"] = file_entries(folder, manifest.get("files"))
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify_manifest(folder: Path, *, trust_unchanged: bool = False) -> list[str]:
    """Names of files whose sha256 or size no longer matches the manifest, or that are missing.

    `trust_unchanged`: a file whose size and modification time are those recorded is taken as
    unchanged without reading it (for checks on every command; `tuneserve verify` reads all).
    """
    problems, to_read = [], {}
    for rel, entry in read_manifest(folder).get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        stat = path.stat()
        if stat.st_size != entry["size"]:
            problems.append(f"{rel}: size differs from the manifest")
        elif not (trust_unchanged and stat.st_mtime_ns == entry.get("mtime_ns")):
            to_read[rel] = (path, entry["sha256"])
    digests = sha256_files([path for path, _ in to_read.values()])
    for rel, (path, expected) in to_read.items():
        if digests[path] != expected:
            problems.append(f"{rel}: sha256 differs from the manifest")
    return problems
