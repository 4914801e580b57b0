"""Where `tools/build_llama_server.py` (run by `make install`) keeps the native llama-server it
builds: ~/.cache/tuneserve/llama-server/KEY/, KEY naming the llama-cpp-python version and this CPU
(the build uses -march=native). Serving looks the binary up here; it never builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from pathlib import Path

from toolkit.core.errors import TuneserveError

PACKAGE = "llama-cpp-python"


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        raise TuneserveError(
            f"{PACKAGE} is not installed, so there is no llama.cpp source version to build",
            "run `make install` (or pip install llama-cpp-python) first",
        ) from None


def _cpu_tag() -> str:
    """Short hash of the CPU's feature flags: a -march=native binary runs only where they match."""
    flags = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line.split(":", 1)[1]
                break
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("TUNESERVE_CACHE", Path(base) / "tuneserve"))


def cached_binary(version: str | None = None) -> Path:
    """Where the binary for `version` (default: the installed one) on this CPU lives."""
    version = version or installed_version()
    return (
        cache_root()
        / "llama-server"
        / f"{version}-{platform.system().lower()}-{_cpu_tag()}"
        / "llama-server"
    )


def find_cached() -> Path | None:
    """The cached binary of the installed llama-cpp-python version, if it was built."""
    try:
        path = cached_binary()
    except TuneserveError:
        return None
    return path if os.access(path, os.X_OK) else None
