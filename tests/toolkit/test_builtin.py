"""The embedded default: SmolLM2 materialized from the wheel's GGUF, reused, and able to chat."""

from __future__ import annotations

import json

import pytest

from toolkit.base_models.builtin import builtin_gguf, materialize
from toolkit.core.artifacts import verify_manifest


def test_materialized_folder_is_a_plain_hf_model_with_a_manifest(base_model):
    config = json.loads((base_model / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (base_model / "model.safetensors").is_file()
    assert (
        "<|im_start|>"
        in (base_model / "tokenizer_config.json").read_text()
        + (base_model / "chat_template.jinja").read_text()
    )
    manifest = json.loads((base_model / "manifest.json").read_text())
    assert manifest["source"]["file"] == builtin_gguf("smollm2-135m").name
    assert "model.safetensors" in manifest["files"] and verify_manifest(base_model) == []


def test_second_call_reuses_the_folder(base_model):
    before = (base_model / "model.safetensors").stat().st_mtime_ns
    assert materialize("smollm2-135m") == base_model
    assert (base_model / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow  # loads the model in transformers and generates: ~6 s
def test_generates_a_coherent_reply_on_cpu(base_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    reply = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply
