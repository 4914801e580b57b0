"""Export: merged16 equals base + adapter, GGUF loads and answers in llama.cpp, quality is checked,
and a killed export leaves nothing that looks complete."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from toolkit.export.modelfile import render_modelfile
from toolkit.export.run_export import export_run, run_gguf

pytestmark = pytest.mark.slow


def test_merged16_matches_base_plus_adapter(exported_demo):
    _, report = exported_demo
    merged = report["merged16"]
    # relative to the logits' size (~30), within fp32 rounding through 30 layers: an absolute
    # 1e-4 failed on one CPU's BLAS (1.36e-4) though the merge was right
    assert merged["merge_matches"] is True
    assert merged["rel_logit_diff_fp32"] <= merged["rel_tolerance_fp32"] < 1e-3
    assert merged["greedy_match_saved"] >= 2 / 3  # bf16 rounding may flip a late token


def test_the_merge_check_holds_one_fp32_copy_of_the_model(exported_demo, base_model, monkeypatch):
    """A 14B is 59 GB in fp32: base + adapter, the fp32 merge and the saved folder each loaded
    at once were killed for memory on a 128 GiB machine. The check loads the base once and
    merges into that same copy; the figures stay what they were."""
    import gc

    from toolkit.export import verify

    run, report = exported_demo
    loads, alive = [], []
    real = verify.load_base

    def counted(base):  # noqa: ANN001, ANN202
        import weakref

        model = real(base)
        loads.append(base)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(verify, "load_base", counted)
    figures = verify.verify_merge(base_model, run / "adapter", run / "merged16")
    gc.collect()
    assert len(loads) == 1  # before: twice (base + adapter, then the fp32 merge from scratch)
    assert all(ref() is None for ref in alive)  # and freed before verify_merge returned
    assert figures["merge_matches"] is True
    assert figures["greedy_match_saved"] == report["merged16"]["greedy_match_saved"]
    assert figures["max_abs_logit_diff_saved"] == pytest.approx(
        report["merged16"]["max_abs_logit_diff_saved"], rel=1e-3
    )


@pytest.fixture(scope="module")
def scaled_adapter(trained_demo, base_model, tmp_path_factory):
    """The demo adapter with lora_alpha = 2 r (scaling 2; with the demo's alpha == r, scaling
    by alpha/r twice would be no mistake at all), its tokenizer, base + it unmerged, and the
    check of its right merge."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolkit.export.merge import load_merged
    from toolkit.export.verify import check_merge

    adapter = tmp_path_factory.mktemp("scaled") / "adapter"
    shutil.copytree(trained_demo.run_dir / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_alpha"] = 2 * config["r"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32), adapter
    )
    right = check_merge(unmerged, load_merged(base_model, adapter), tokenizer)
    return adapter, tokenizer, unmerged, right


def _broken_merge(base, adapter, mistake: str):
    """base + adapter merged in fp32 the wrong way: the bugs the check must catch."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter
    )
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    if mistake == "alpha_over_r_twice":
        for _, layer in layers:
            layer.scaling["default"] *= layer.scaling["default"]
    elif mistake == "one_module_missed":  # a single projection of a single layer left out
        name, layer = next((n, m) for n, m in layers if n.endswith("layers.15.self_attn.v_proj"))
        torch.nn.init.zeros_(layer.lora_B["default"].weight)
    else:  # a projection type left out in every layer (target_modules read wrong)
        for _, layer in (pair for pair in layers if pair[0].endswith(mistake)):
            torch.nn.init.zeros_(layer.lora_B["default"].weight)
    return model.merge_and_unload()


@pytest.mark.parametrize(
    "mistake", ["alpha_over_r_twice", "one_module_missed", "down_proj", "k_proj"]
)
def test_a_wrong_merge_fails_the_check(scaled_adapter, base_model, mistake):
    from toolkit.export.verify import check_merge

    adapter, tokenizer, unmerged, right = scaled_adapter
    assert right["merge_matches"], right  # the check passes the right merge of this adapter
    wrong = check_merge(unmerged, _broken_merge(base_model, adapter, mistake), tokenizer)
    assert not wrong["merge_matches"], wrong
    # by a margin: the mistake is far above the bound, the right merge far below it
    assert wrong["rel_logit_diff_fp32"] > 10 * wrong["rel_tolerance_fp32"]
    assert right["rel_logit_diff_fp32"] < wrong["rel_tolerance_fp32"] / 4


def test_merged16_is_what_vllm_serve_loads(exported_demo):
    from toolkit.export.vllm_compat import check_vllm_folder

    run, _ = exported_demo
    assert check_vllm_folder(run / "merged16") == []


def test_generation_config_carries_the_default_mode_sampling(exported_demo):
    from toolkit.core.modes import SAMPLING

    run, _ = exported_demo
    config = json.loads((run / "merged16" / "generation_config.json").read_text())
    chat = SAMPLING["chat"]  # SmolLM2's template has no enable_thinking
    assert config["do_sample"] is True
    assert (config["temperature"], config["top_p"], config["top_k"]) == (
        chat.temperature,
        chat.top_p,
        chat.top_k,
    )


@pytest.mark.parametrize("quant", ["f16", "q4_k_m"])
def test_gguf_loads_in_llama_cpp_and_answers(exported_demo, quant):
    from llama_cpp import Llama

    run, _ = exported_demo
    llm = Llama(str(run_gguf(run, quant)), n_ctx=256, verbose=False, n_threads=2)
    assert float(llm.metadata["general.sampling.temp"]) == pytest.approx(0.7)
    assert int(llm.metadata["general.sampling.top_k"]) == 20
    assert "<|im_start|>" in llm.metadata["tokenizer.chat_template"]
    reply = llm.create_chat_completion(
        [{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
    )
    llm.close()
    assert reply["choices"][0]["message"]["content"].strip()


def test_quality_check_puts_q4_further_from_the_merged_model_than_q8(exported_demo):
    from transformers import AutoTokenizer

    from toolkit.export.verify import gguf_perplexity, heldout_texts

    run, report = exported_demo
    assert not report["gguf-q8_0"]["flagged"] and not report["gguf-q4_k_m"]["flagged"]
    assert report["gguf-q8_0"]["ppl_merged16"] == report["gguf-q4_k_m"]["ppl_merged16"]
    # The export's ratio sets llama.cpp against transformers, and for this tiny model the two
    # engines alone are a few percent apart (CI saw q8_0 at 1.04x and q4_k_m at 1.04x, another
    # time q4 0.917 vs q8 0.978): too close to tell the quants apart by it. Within llama.cpp,
    # against the f16 GGUF both were made from, over held-out and training text, q8_0 stays
    # close and q4_k_m (SmolLM2 ships as Q4_1, re-quantized) moves further (seen: f16 63.9,
    # q8_0 62.6, q4_k_m 59.1 over 64 rows; llama.cpp's CPU matmuls quantize the activations to
    # 8 bits too, hence q8_0's 2%).
    tokenizer = AutoTokenizer.from_pretrained(run / "merged16")
    rows = [
        json.loads(line)
        for split in ("heldout", "train")
        for line in (run / "data" / f"{split}.jsonl").read_text().splitlines()
    ]
    sequences = heldout_texts(tokenizer, rows, limit=64)
    ppl = {q: gguf_perplexity(run_gguf(run, q), sequences) for q in ("f16", "q8_0", "q4_k_m")}
    distance = {q: abs(math.log(ppl[q] / ppl["f16"])) for q in ("q8_0", "q4_k_m")}
    print("perplexity over", len(sequences), "rows:", ppl)
    assert distance["q8_0"] < 0.05 and distance["q4_k_m"] > 1.5 * distance["q8_0"], ppl


def test_manifest_records_exports_and_hashes(exported_demo):
    from toolkit.core.artifacts import verify_manifest

    run, _ = exported_demo
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"lora", "merged16", "gguf-q8_0", "gguf-q4_k_m"} <= set(manifest["exports"])
    assert f"gguf/{run.name}-q8_0.gguf" in manifest["files"] and verify_manifest(run) == []


def test_modelfile_has_template_stop_and_sampling(exported_demo):
    run, _ = exported_demo
    text = (run / "Modelfile").read_text()
    assert text.startswith(f"FROM ./gguf/{run.name}-q8_0.gguf")
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.7" in text
    assert "PARAMETER top_k 20" in text
    assert "PARAMETER temperature 0.6" in render_modelfile("x.gguf", "{% if enable_thinking %}")


def test_killed_export_leaves_nothing_complete_looking_and_rerun_finishes(
    exported_demo, tmp_path, monkeypatch
):
    source, _ = exported_demo
    models = tmp_path / "models"
    run = models / "runs" / source.name
    run.mkdir(parents=True)
    for name in ("recipe.yaml", "adapter", "data"):
        copy = shutil.copytree if (source / name).is_dir() else shutil.copy
        copy(source / name, run / name)
    env = {**os.environ, "TUNESERVE_MODELS_DIR": str(models)}
    command = [
        sys.executable,
        "-m",
        "toolkit.cli",
        "export",
        str(run),
        "--format",
        "gguf",
        "--quant",
        "q4_k_m",
    ]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if any((run / "gguf").glob(".*.tmp")) if (run / "gguf").exists() else False:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not run_gguf(run, "q4_k_m").exists() and not run_gguf(run, "f16").exists()
    assert list((run / "gguf").glob(".*.tmp")), "the kill should have landed mid-conversion"

    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(models))
    report = export_run(run, ["gguf"], ["q4_k_m"])
    assert run_gguf(run, "q4_k_m").is_file() and "gguf-q4_k_m" in report
    assert not list((run / "gguf").glob(".*.tmp")) and not list(run.glob(".*.tmp"))


def test_export_of_an_untrained_folder_is_a_clear_error(tmp_path):
    from toolkit.core.errors import TuneserveError

    with pytest.raises(TuneserveError, match="not a training run"):
        export_run(tmp_path, ["gguf"], ["q8_0"])
