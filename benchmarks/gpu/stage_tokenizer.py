"""Stage SmolLM2's tokenizer files (no weights, ~2 MB) as a base-models folder for the GPU machine.

The 514 MB materialized SmolLM2 cannot travel to the device (64 MiB a call); the GPU tests and
`benchmarks/train_throughput.py` read only its tokenizer (they build random Qwen3-shaped models
around it). The manifest lets `toolkit.base_models.builtin.materialize` find the folder complete, and says
that the weights were left behind.

Usage: .venv/bin/python benchmarks/gpu/stage_tokenizer.py [OUT]   (default benchmarks/gpu/wheels-base)
Then on the device: TUNESERVE_BASE_DIR=benchmarks/gpu/wheels-base
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"]


def main() -> None:
    from toolkit.base_models.builtin import (
        BUILTIN_MODELS,
        BUILTIN_PREFIX,
        CONVERSION_VERSION,
        materialize,
    )

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/gpu/wheels-base")
    source = materialize("smollm2-135m")
    target = out / BUILTIN_MODELS["smollm2-135m"].folder
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    from toolkit.core.artifacts import update_manifest

    update_manifest(
        target,
        builtin=f"{BUILTIN_PREFIX}smollm2-135m",
        conversion=CONVERSION_VERSION,
        weights="not carried: tokenizer only, for random-initialised models on the GPU machine",
    )
    print(target)


if __name__ == "__main__":
    main()
