"""Will `vllm serve DIR` load this folder? What can be checked without vLLM (it needs CUDA).

The architecture list is a snapshot of vLLM's own text-generation registry
(vllm_architectures.json, with the commit it was read at).
"""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("vllm_architectures.json")
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


def known_architectures() -> set[str]:
    return set(json.loads(SNAPSHOT.read_text())["architectures"])


def check_vllm_folder(folder: Path) -> list[str]:
    """Problems that would stop vLLM from serving `folder` as intended; [] when none."""
    problems = []
    config_path = folder / "config.json"
    if not config_path.is_file():
        return [f"{folder}: no config.json"]
    config = json.loads(config_path.read_text())
    architectures = config.get("architectures") or []
    if not architectures or architectures[0] not in known_architectures():
        problems.append(f"config.json: architecture {architectures} is not in vLLM's registry")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        problems += [f"missing shard {s}" for s in sorted(shards) if not (folder / s).is_file()]
    elif not (folder / "model.safetensors").is_file():
        problems.append("no model.safetensors or model.safetensors.index.json")
    if list(folder.glob("*.bin")):
        problems.append("pickle .bin weights present: vLLM should get safetensors only")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
        problems.append("no tokenizer.json or tokenizer.model")
    tokenizer_config = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and "chat_template" in json.loads(tokenizer_config.read_text())
    )
    if not has_template:
        problems.append("no chat template: /v1/chat/completions would fail")
    generation = folder / "generation_config.json"
    if not generation.is_file():
        problems.append("no generation_config.json: vLLM would use its own sampling defaults")
    else:
        fields = json.loads(generation.read_text())
        missing = [f for f in SAMPLING_FIELDS if not isinstance(fields.get(f), int | float)]
        if missing:
            problems.append(f"generation_config.json lacks {missing}")
    return problems
