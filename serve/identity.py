"""What model a route serves, as a short identity `/v1/models` shows (and eval caches key by).

Hashing a 28 GB model on every `serve` start is not an option, so the identity is the sha256
a run's manifest.json already holds for the files (`source: manifest`), trusted only while the
manifest is newer than every file and the sizes match; else a cheap one from each file's path,
size and modification time (`source: stat`), which changes whenever a file is rewritten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.artifacts import MANIFEST


@dataclass(frozen=True)
class Identity:
    value: str  # "sha256:<hex>" or "stat:<hex>"
    source: str  # "manifest" or "stat"


def model_identity(path: Path, adapters: tuple[Path, ...] = ()) -> Identity:
    """The identity of a GGUF file or a model folder, plus any LoRA adapters served on it."""
    parts = [_files_identity(path), *(_files_identity(adapter) for adapter in adapters)]
    source = "manifest" if all(part.source == "manifest" for part in parts) else "stat"
    if len(parts) == 1:
        return parts[0]
    combined = hashlib.sha256("\n".join(part.value for part in parts).encode()).hexdigest()
    return Identity(f"{'sha256' if source == 'manifest' else 'stat'}:{combined}", source)


def _files_identity(path: Path) -> Identity:
    path = path.resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if _weights(p, path))
    recorded = _from_manifest(path, files)
    if recorded is not None:
        return Identity(recorded, "manifest")
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return Identity(f"stat:{digest.hexdigest()}", "stat")


def _weights(file: Path, root: Path) -> bool:
    """Files that make the model: not hidden ones, not the manifest itself."""
    relative = file.relative_to(root)
    return file.is_file() and file.name != MANIFEST and not relative.parts[0].startswith(".")


def _from_manifest(path: Path, files: list[Path]) -> str | None:
    """sha256 of the files' recorded hashes, from the first manifest up the tree that lists
    them all (the model's own folder, its run folder), or None when none is up to date."""
    if not files:
        return None
    for folder in (path if path.is_dir() else path.parent, *path.parents[:2]):
        manifest = folder / MANIFEST
        if not manifest.is_file():
            continue
        try:
            recorded = json.loads(manifest.read_text()).get("files", {})
            written = manifest.stat().st_mtime_ns
            lines = []
            for file in files:
                entry = recorded[file.relative_to(folder).as_posix()]
                stat = file.stat()
                if entry["size"] != stat.st_size or stat.st_mtime_ns > written:
                    return None  # the file changed after the manifest was written
                if file == path:  # one file: its own sha256, whatever its name
                    return f"sha256:{entry['sha256']}"
                lines.append(f"{file.relative_to(path).as_posix()}:{entry['sha256']}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return None
