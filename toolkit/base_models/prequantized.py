"""Models whose weights are already quantized on disk, such as Unsloth's `unsloth/...-bnb-4bit`
Hub repos: their config.json carries the bitsandbytes `quantization_config` they were saved with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def quantization_config(folder: Path) -> dict[str, Any] | None:
    """The `quantization_config` of a model folder's config.json, None when it has none."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    return quant if isinstance(quant, dict) else None


def is_prequantized_4bit(folder: Path) -> bool:
    """True for a folder saved in bitsandbytes 4-bit (it loads in 4-bit whatever the recipe says,
    and a 16-bit merge must dequantize it first)."""
    quant = quantization_config(folder) or {}
    # transformers saves the flag as `load_in_4bit`; older versions as `_load_in_4bit` beside it.
    return quant.get("quant_method") == "bitsandbytes" and bool(
        quant.get("load_in_4bit") or quant.get("_load_in_4bit")
    )
