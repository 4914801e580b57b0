"""Build llama.cpp's native `llama-server` offline and cache it, for machines with only PyPI.

No prebuilt binary can be downloaded here, but the llama-cpp-python sdist vendors llama.cpp's
whole source: `pip download` it (the version installed, so server and bindings match), build
the one target with cmake, and keep the binary under ~/.cache/tuneserve/llama-server/KEY/, KEY
naming the version and this CPU (the build uses -march=native). `make install` runs this once;
later runs, CI included, find the cached binary and return at once.

    python tools/build_llama_server.py [--jobs N] [--nice 10] [--print-path]

An install-time tool, outside the installed packages; serving only looks the binary up
(serve/engines/llama_server_cache.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# The repo root, so `python tools/build_llama_server.py` imports this checkout's packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve.engines.llama_server_cache import PACKAGE, cached_binary, installed_version  # noqa: E402
from toolkit.core.errors import TuneserveError  # noqa: E402

# Offline and self-contained: no HTTPS/curl model downloads, no web UI fetched at build time,
# static libraries so the one cached file is the whole server.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
]


def _run(argv: list[str], log: Path, nice: int) -> None:
    prefix = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.call([*prefix, *argv], stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise TuneserveError(
            f"building llama-server failed ({argv[0]} exited {code}); log {log}:\n{tail}",
            "check that cmake and a C++17 compiler are installed",
        )


def _source(version: str, work: Path, log: Path, nice: int) -> Path:
    """The llama.cpp source tree vendored in the llama-cpp-python sdist."""
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    download += ["--no-binary", ":all:", f"{PACKAGE}=={version}", "-d", str(work)]
    _run(download, log, nice)
    sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(work, filter="data")
    source = work / sdist.name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise TuneserveError(f"{sdist.name} has no vendor/llama.cpp", "report this version")
    return source


def build(version: str | None = None, jobs: int | None = None, nice: int = 10) -> Path:
    """The cached llama-server for `version`, built first when missing (10-20 min on 2 cores)."""
    version = version or installed_version()
    target = cached_binary(version)
    if os.access(target, os.X_OK):
        return target
    if shutil.which("cmake") is None:
        raise TuneserveError("cmake is not installed", "install cmake (apt-get install cmake)")
    target.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second `make install` waits, then reuses the build
        if os.access(target, os.X_OK):
            return target
        log = target.parent / "build.log"
        log.write_text("")
        with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
            work = Path(tmp)
            source = _source(version, work, log, nice)
            configure = ["cmake", "-S", str(source), "-B", str(work / "build"), *CMAKE_FLAGS]
            if shutil.which("ninja"):
                configure += ["-G", "Ninja"]
            _run(configure, log, nice)
            jobs = jobs or os.cpu_count() or 2
            _run(
                ["cmake", "--build", str(work / "build"), "--target", "llama-server"]
                + ["-j", str(jobs)],
                log,
                nice,
            )
            partial = target.with_suffix(".partial")
            shutil.copy2(work / "build" / "bin" / "llama-server", partial)
            partial.chmod(0o755)
            partial.replace(target)  # atomic: a half-copied file never looks built
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help=f"{PACKAGE} version (default: the installed one)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the compiler processes")
    parser.add_argument("--print-path", action="store_true", help="print the cached path and exit")
    args = parser.parse_args()
    try:
        if args.print_path:
            print(cached_binary(args.version))
            return
        started = time.monotonic()
        cached = os.access(cached_binary(args.version), os.X_OK)
        path = build(args.version, args.jobs, args.nice)
    except TuneserveError as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        sys.exit(1)
    took = "cached" if cached else f"built in {time.monotonic() - started:.0f} s"
    print(f"llama-server: {path} ({took})")


if __name__ == "__main__":
    main()
