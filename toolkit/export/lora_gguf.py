"""A PEFT LoRA adapter as a llama.cpp GGUF adapter, for `llama-server --lora` (checkpoints
served side by side on one engine instead of a merged GGUF each).

The conversion is llama.cpp's own `convert_lora_to_gguf.py`, taken with its `conversion/` and
`gguf-py/` from the llama-cpp-python sdist of the installed version (the source the native
llama-server is built from, so the adapter format matches the server), fetched from PyPI once
and cached: `make install` fetches it, so a run needs no network.

    python -m toolkit.export.lora_gguf --fetch
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from toolkit.core.errors import TuneserveError
from toolkit.export.gguf import run_converter

PACKAGE = "llama-cpp-python"
SCRIPT = "convert_lora_to_gguf.py"
# What the script imports from its own tree (it puts gguf-py first on sys.path).
MEMBERS = (SCRIPT, "convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter_dir() -> Path:
    from importlib.metadata import version

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(os.environ.get("TUNESERVE_CACHE", Path(base) / "tuneserve"))
    return root / "llama-convert" / version(PACKAGE)


def fetch_converter() -> Path:
    """The cached converter folder, downloaded (the sdist, ~60 MB, once) when missing."""
    from importlib.metadata import version

    target = converter_dir()
    if (target / SCRIPT).is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="llama-convert-") as tmp:
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        download += ["--no-binary", ":all:", f"{PACKAGE}=={version(PACKAGE)}", "-d", tmp]
        done = subprocess.run(download, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise TuneserveError(
                f"could not fetch llama.cpp's LoRA converter ({PACKAGE} sdist): "
                f"{(done.stderr or '').strip()[-300:]}",
                "run `python -m toolkit.export.lora_gguf --fetch` where PyPI is reachable "
                "(make install does)",
            )
        prefix = sdists[0].name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
        staging = Path(tmp) / "staging"
        with tarfile.open(sdists[0]) as archive:
            wanted = [
                m
                for m in archive.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(MEMBERS)
            ]
            for member in wanted:
                member.name = member.name[len(prefix) :]
            archive.extractall(staging, members=wanted, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)  # atomic: a half-extracted folder never looks complete
        except OSError:
            if not (target / SCRIPT).is_file():  # not a concurrent fetch that won
                raise
    return target


def convert_lora(adapter: Path, base: Path, out: Path) -> Path:
    """`adapter` (a PEFT folder trained on `base`) as an f16 GGUF LoRA at `out` (atomic)."""
    script = fetch_converter() / SCRIPT
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    command = [sys.executable, str(script), "--base", str(base), "--outfile", str(tmp)]
    command += ["--outtype", "f16", str(adapter)]
    done = run_converter(command)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise TuneserveError(f"LoRA to GGUF conversion of {adapter} failed:\n{tail}")
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--fetch"]:
        sys.exit(__doc__)
    print(f"llama.cpp LoRA converter: {fetch_converter()}")
