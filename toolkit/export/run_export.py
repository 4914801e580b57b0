"""`tuneserve export` / `merge`: a run's adapter as lora, merged16, merged4 and GGUF files.

Every artifact is written atomically and checked against its source; the checks' figures go
into the run's manifest under `exports`. Re-running skips what is complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from toolkit.base_models.builtin import trained_base
from toolkit.base_models.prequantized import is_prequantized_4bit
from toolkit.core.artifacts import (
    base_models_dir,
    read_manifest,
    remove_stale_temps,
    run_dir,
    sha256_file,
    sha256_text,
    update_manifest,
)
from toolkit.core.errors import TuneserveError
from toolkit.core.quants import GGUF_QUANTS
from toolkit.core.quiet import quiet_libraries
from toolkit.export.gguf import export_gguf
from toolkit.export.merge import base_of, merge_adapter
from toolkit.export.modelfile import write_modelfile
from toolkit.export.verify import verify_gguf, verify_merge
from toolkit.recipe.loader import load_recipe
from toolkit.recipe.schema import EXPORT_FORMATS, Recipe

# What each output takes a parameter: merged16 and the f16 GGUF every quant is made from are
# 16-bit; a quantized GGUF is under 1.1 bytes (q8_0 8.5 bits, q6_k 6.6, q4_k_m ~4.9).
BYTES_PER_PARAM = {"merged16": 2.0, "f16": 2.0, "bf16": 2.0, "f32": 4.0, "quant": 1.1}


def run_gguf(folder: Path, quant: str) -> Path:
    return folder / "gguf" / f"{folder.name}-{quant}.gguf"


def base_label(base: Path) -> str:
    """A file-name-safe name of a base model folder (a Hub snapshot: repo and commit)."""
    if base.parent.name == "snapshots":  # <cache>/models--org--name/snapshots/<commit>
        return f"{base.parent.parent.name.removeprefix('models--')}-{base.name[:10]}"
    return base.name


def base_gguf_path(base: Path, quant: str) -> Path:
    return base_models_dir() / "gguf" / f"{base_label(base)}-{quant}.gguf"


def base_gguf(base: Path, quant: str) -> Path:
    """The base model in the same format as the tuned one, so a comparison measures the tuning."""
    out = base_gguf_path(base, quant)
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out.parent)
        export_gguf(base, out, quant, base_gguf_path(base, "f16"))
    return out


def load_run(run: str | Path) -> tuple[Path, Recipe]:
    folder = Path(run) if Path(run).is_dir() else run_dir(str(run))
    if not (folder / "recipe.yaml").is_file():
        raise TuneserveError(
            f"{folder} is not a training run (no recipe.yaml)",
            "train first: tuneserve train RECIPE",
        )
    if not (folder / "adapter" / "adapter_config.json").is_file():
        raise TuneserveError(
            f"{folder} has no finished adapter",
            f"finish training: tuneserve train {folder / 'recipe.yaml'} --resume",
        )
    return folder, load_recipe(folder / "recipe.yaml", check_paths=False)


def base_parameters(base: Path) -> int:
    """Parameters of a base folder, from its safetensors' size and the dtype its config names
    (bitsandbytes 4-bit packs two in a byte)."""
    weights = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    if is_prequantized_4bit(base):
        return weights * 2
    config = (
        json.loads((base / "config.json").read_text()) if (base / "config.json").is_file() else {}
    )
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return weights // (4 if dtype == "float32" else 2)


def export_bytes(parameters: int, formats: list[str], quants: list[str]) -> int:
    """Disk the asked formats write: merged16 (the GGUF's source too), the f16 GGUF the
    quants are made from, each quant."""
    per = BYTES_PER_PARAM["merged16"]
    if "gguf" in formats:
        made = {"f16"} | set(quants)
        per += sum(BYTES_PER_PARAM.get(quant, BYTES_PER_PARAM["quant"]) for quant in made)
    return int(parameters * per)


def check_disk(folder: Path, base: Path, formats: list[str], quants: list[str]) -> None:
    needed = export_bytes(base_parameters(base), formats, quants)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise TuneserveError(
            f"only {free / 2**30:.1f} GiB free under {folder}, the export needs about {needed / 2**30:.1f} GiB",
            "free some disk space or point TUNESERVE_MODELS_DIR at a larger disk",
        )


def export_run(run: str | Path, formats: list[str], quants: list[str]) -> dict[str, Any]:
    quiet_libraries()
    folder, recipe = load_run(run)
    unknown = [f for f in formats if f not in EXPORT_FORMATS] + [
        q for q in quants if q not in GGUF_QUANTS
    ]
    if unknown:
        raise TuneserveError(
            f"unknown format or quant {unknown}",
            f"formats: {EXPORT_FORMATS}; quants: {GGUF_QUANTS}",
        )
    remove_stale_temps(folder)
    remove_stale_temps(folder / "gguf")
    base = trained_base(folder, recipe.model.name)
    adapter = folder / "adapter"
    made_from = adapter_fingerprint(adapter)
    # Exports of this very adapter are reused (by `export`, `run`, a killed and resumed export);
    # those of an earlier training of the run are redone.
    done = {
        name: record
        for name, record in read_manifest(folder).get("exports", {}).items()
        if record.get("adapter") == made_from
    }
    if {"merged16", "gguf"} & set(formats) and "merged16" not in done:
        check_disk(folder, base, formats, quants)
    if "lora" in formats:
        files = sorted(p.name for p in adapter.iterdir())
        done["lora"] = {"path": str(adapter), "files": files, "adapter": made_from}
    if "merged4" in formats:
        raise TuneserveError(
            "merged4 needs bitsandbytes on a CUDA GPU",
            "export merged16 here, or run the export on a GPU machine with tuneserve[bitsandbytes]",
        )
    if "merged16" in formats or "gguf" in formats:
        done["merged16"] = export_merged(folder, base, adapter, done.get("merged16"))
        done["merged16"]["adapter"] = made_from
        update_manifest(folder, exports=done)
    if "gguf" in formats:
        for quant in quants:
            done[f"gguf-{quant}"] = export_quant(folder, recipe, quant, done.get(f"gguf-{quant}"))
            done[f"gguf-{quant}"]["adapter"] = made_from
            update_manifest(folder, exports=done)
        write_modelfile_for(folder, quants[0])
    update_manifest(folder, exports=done)
    return done


def adapter_fingerprint(adapter: Path) -> str:
    """What an export was made from: the adapter's weights and config (small files)."""
    parts = [sha256_file(adapter / name) for name in ADAPTER_FILES if (adapter / name).is_file()]
    return sha256_text(" ".join(parts))[:16]


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def export_merged(folder: Path, base: Path, adapter: Path, previous: dict | None) -> dict[str, Any]:
    out = folder / "merged16"
    if previous and (out / "config.json").is_file():
        return previous
    merge_adapter(base, adapter, out, dtype="bfloat16")
    return {"path": str(out), "dtype": "bfloat16", **verify_merge(base, adapter, out)}


def export_quant(folder: Path, recipe: Recipe, quant: str, previous: dict | None) -> dict[str, Any]:
    out = run_gguf(folder, quant)
    if previous and out.is_file():
        return previous
    export_gguf(folder / "merged16", out, quant, run_gguf(folder, "f16"))
    report = verify_gguf(folder, out)
    report["flagged"] = report["ppl_ratio"] > recipe.export.max_ppl_ratio
    if report["flagged"]:
        import click

        click.secho(
            f"WARNING: {out.name} perplexity is {report['ppl_ratio']:.2f}x the merged model's "
            f"(threshold {recipe.export.max_ppl_ratio}); this quantization damages the model",
            fg="red",
            err=True,
        )
    return report


def write_modelfile_for(folder: Path, quant: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder / "merged16")
    write_modelfile(folder, f"gguf/{run_gguf(folder, quant).name}", tokenizer.chat_template)


def merge_command_impl(adapter: Path, save_as: Path, fmt: str, quant: str) -> list[Path]:
    """The seed article's `merge --model ADAPTER --save_as OUT --format vllm|gguf`, made real."""
    base = Path(base_of(adapter))
    if not base.exists():
        raise TuneserveError(
            f"the adapter's base model {base} is not on this machine",
            "train and merge on the same machine, or fix base_model_name_or_path in adapter_config.json",
        )
    if fmt == "vllm":
        return [merge_adapter(base, adapter, save_as)]
    merged = save_as / "merged16"
    if not (merged / "config.json").is_file():
        merge_adapter(base, adapter, merged)
    out = save_as / f"{save_as.name}-{quant}.gguf"
    export_gguf(merged, out, quant, save_as / f"{save_as.name}-f16.gguf")
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(merged).chat_template
    return [out, write_modelfile(save_as, out.name, template)]
