"""Checkpoints as LoRA adapters on one llama-server: each served name applies its own adapter
per request, the model's own name stays the base, and an adapter answers like its merged
export; `eval.select` keeps the best heldout checkpoint that keeps the guard."""

from __future__ import annotations

import json
import shutil

import openai
import pytest

from serve.engines.base import EngineError
from serve.engines.llamacpp import LlamaCppEngine, native_llama_server
from serve.launcher import serve_models
from serve.model_source import ModelSource
from tests.conftest import DEMO_RECIPE


def test_adapters_load_at_scale_zero_and_need_the_native_server(tmp_path, monkeypatch):
    lora = [tmp_path / "a.gguf", tmp_path / "b.gguf"]
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "/usr/bin/true")
    argv = LlamaCppEngine(name="m", model_path=tmp_path / "m.gguf", lora_files=lora).command()
    # loaded at scale 0: the model's own name answers as the base
    assert argv[argv.index("--lora-scaled") + 1] == f"{lora[0]}:0"
    assert argv.count("--lora-scaled") == 2
    assert LlamaCppEngine(name="m", model_path=tmp_path / "m.gguf").adapter_body(1) == {
        "lora": [{"id": 1, "scale": 1.0}]
    }
    monkeypatch.setenv("TUNESERVE_LLAMA_SERVER", "off")
    with pytest.raises(EngineError, match="native llama-server"):
        LlamaCppEngine(name="m", model_path=tmp_path / "m.gguf", lora_files=lora).command()


def ask(client: openai.OpenAI, model: str, question: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
        seed=0,
    )
    return reply.choices[0].message.content or ""


@pytest.mark.slow
def test_an_adapter_on_the_base_engine_answers_like_its_merged_export(exported_demo, tmp_path):
    from toolkit.base_models.builtin import resolve_model
    from toolkit.export.lora_gguf import convert_lora
    from toolkit.export.run_export import base_gguf, run_gguf
    from toolkit.recipe.loader import load_recipe

    assert native_llama_server(), "make install builds the native llama-server"
    run_dir, _ = exported_demo
    lora = convert_lora(
        run_dir / "adapter", resolve_model("builtin:smollm2-135m"), tmp_path / "l.gguf"
    )
    base = base_gguf(resolve_model(load_recipe(DEMO_RECIPE).model.name), "q8_0")
    rows = [
        json.loads(line) for line in (run_dir / "data" / "heldout.jsonl").read_text().splitlines()
    ]
    questions = [row["messages"][0]["content"] for row in rows][:10]
    sources = [
        ModelSource("base", base, adapters=(("tuned-lora", lora),)),
        f"tuned={run_gguf(run_dir, 'q8_0')}",
    ]
    with serve_models(sources, engine="llamacpp") as served:
        client = openai.OpenAI(base_url=served.base_url, api_key=served.api_key or "none")
        answers = {
            name: [ask(client, name, q) for q in questions]
            for name in ("base", "tuned-lora", "tuned")
        }
    same = sum(a == b for a, b in zip(answers["tuned-lora"], answers["tuned"], strict=True))
    learned = sum(a.startswith(("Capital:", "Opposite:")) for a in answers["tuned-lora"])
    assert same >= 8, answers  # the adapter applied per request is the merged model
    assert learned >= 8 and not any(
        a.startswith(("Capital:", "Opposite:")) for a in answers["base"]
    )


@pytest.mark.slow
def test_select_keeps_a_checkpoint_that_keeps_the_guard(trained_demo, tmp_path, monkeypatch):
    from toolkit.core.artifacts import read_manifest
    from toolkit.pipeline.forgetting import select_checkpoint
    from toolkit.recipe.loader import load_recipe

    assert native_llama_server(), "make install builds the native llama-server"
    models = tmp_path / "models"
    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(models))
    folder = models / "runs" / "sel"
    shutil.copytree(trained_demo.run_dir, folder)
    guard = tmp_path / "guard.jsonl"  # a small guard keeps the test short
    lines = (DEMO_RECIPE.parents[2] / "evals" / "suites" / "guard.jsonl").read_text().splitlines()
    guard.write_text("\n".join(lines[::10]) + "\n")
    recipe = load_recipe(DEMO_RECIPE, ["name=sel", "eval.select=true", "eval.max_tokens=24"])
    record = select_checkpoint(recipe, folder, echo=lambda _: None, guard_suite=str(guard))
    assert record is not None and [c["step"] for c in record["candidates"]] == [10, 20, 30]
    chosen = next(c for c in record["candidates"] if c["name"] == record["chosen"])
    passing = [c for c in record["candidates"] if c["passes"]]
    if passing:
        assert chosen["heldout"] == max(c["heldout"] for c in passing) and chosen["passes"]
    checkpoint = folder / "checkpoints" / f"checkpoint-{chosen['step']}"
    assert (folder / "adapter" / "adapter_model.safetensors").read_bytes() == (
        checkpoint / "adapter_model.safetensors"
    ).read_bytes()
    assert (folder / "adapter" / "tokenizer_config.json").is_file()  # the serving files stay
    assert (folder / "selection" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert read_manifest(folder)["selection"]["chosen"] == record["chosen"]
