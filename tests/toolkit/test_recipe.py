"""The recipe: defaults from the seed, YAML with file:line errors, --set overrides, save/reload."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from toolkit.core.errors import TuneserveError
from toolkit.recipe.loader import dump_recipe, load_recipe, parse_yaml
from toolkit.recipe.schema import PROJECTION_MODULES, Recipe


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    (tmp_path / "data.jsonl").write_text('{"messages": []}\n')
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_follow_the_unsloth_seed_recipe():
    recipe = Recipe()
    assert (recipe.lora.r, recipe.lora.lora_alpha, recipe.lora.lora_dropout) == (32, 32, 0.0)
    assert recipe.lora.target_modules == PROJECTION_MODULES
    # the seed writes "unsloth"; auto picks it, or faster recompute when activations fit
    assert recipe.lora.use_gradient_checkpointing == "auto"
    assert recipe.lora.random_state == 3407
    train = recipe.train
    assert (train.per_device_train_batch_size, train.gradient_accumulation_steps) == (2, 4)
    assert (train.warmup_steps, train.max_steps, train.learning_rate) == (5, 30, 2e-4)
    assert (train.optim, train.weight_decay, train.lr_scheduler_type) == (
        "adamw_8bit",
        0.01,
        "linear",
    )
    assert train.seed == 3407 and recipe.data.shuffle_seed == 42
    assert recipe.model.max_seq_length == 2048 and recipe.data.train_on_responses_only


def test_yaml_floats_without_a_dot_are_numbers():
    data, _ = parse_yaml("lr: 2e-4\nother: 1E5\n", "x")
    assert data == {"lr": 2e-4, "other": 1e5}


def test_name_defaults_to_file_stem_and_paths_resolve_next_to_the_recipe(tmp_path):
    path = write(tmp_path, "data:\n  - data.jsonl\n", name="my-run.yaml")
    recipe = load_recipe(path)
    assert recipe.run_name == "my-run"
    assert recipe.data.sources[0].path == str(tmp_path / "data.jsonl")


def test_bare_list_under_data_means_sources(tmp_path):
    path = write(tmp_path, "data:\n  - path: data.jsonl\n    mode: chat\n    weight: 2\n")
    source = load_recipe(path).data.sources[0]
    assert (source.mode, source.weight, source.format) == ("chat", 2.0, "auto")


def test_set_overrides_nested_keys_with_type_coercion(tmp_path):
    path = write(tmp_path, "data: [data.jsonl]\n")
    recipe = load_recipe(
        path,
        [
            "train.learning_rate=1e-4",
            "lora.r=16",
            "model.load_in_4bit=true",
            "lora.target_modules=[q_proj, v_proj]",
            "data.sources.0.weight=3",
            "export.quant=q4_k_m,q8_0",
        ],
    )
    assert recipe.train.learning_rate == 1e-4
    assert recipe.lora.r == 16 and recipe.model.load_in_4bit is True
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.sources[0].weight == 3.0
    assert recipe.export.quant == ["q4_k_m", "q8_0"]


def test_resolved_recipe_saves_and_reloads_identically(tmp_path):
    path = write(tmp_path, "data: [data.jsonl]\ntrain:\n  num_train_epochs: 2\n")
    recipe = load_recipe(path, ["lora.r=8"])
    saved = tmp_path / "elsewhere" / "resolved.yaml"
    saved.parent.mkdir()
    saved.write_text(dump_recipe(recipe))
    again = load_recipe(saved)
    assert again == recipe
    assert dump_recipe(again) == dump_recipe(recipe)


def test_starter_recipe_is_valid(tmp_path):
    from toolkit.starter import write_starter

    recipe_path, dataset = write_starter(tmp_path)
    recipe = load_recipe(recipe_path)
    assert recipe.run_name == "my-first-run" and dataset.is_file()
    assert recipe.data.sources[0].path == str(dataset.resolve())


# (yaml text, field that the message must name, words the message must contain)
BAD_RECIPES = [
    ("train:\n  learning_rate: fast\n", "train.learning_rate", "valid number"),
    ("train:\n  max_steps: -5\n", "train.max_steps", "greater than 0"),
    ("train:\n  max_steps: 0\n", "train.max_steps", "greater than 0"),
    ("train:\n  warmup_steps: -1\n", "train.warmup_steps", "greater than or equal"),
    ("train:\n  learning_rate: 5\n", "train.learning_rate", "less than 1"),
    ("train:\n  per_device_train_batch_size: two\n", "per_device_train_batch_size", "integer"),
    ("train:\n  max_steps: 10\n  num_train_epochs: 1\n", "train", "both set"),
    ("train:\n  lr_scheduler_type: wavy\n", "lr_scheduler_type", "linear"),
    ("train:\n  bf16: true\n  fp16: true\n", "train", "choose one"),
    ("train:\n  learning_rat: 0.1\n", "train.learning_rat", "did you mean 'learning_rate'"),
    ("lora:\n  rank: 8\n", "lora.rank", "unknown key"),
    ("lora:\n  lora_alpah: 8\n", "lora.lora_alpah", "did you mean 'lora_alpha'"),
    ("lora:\n  r: 1.5\n", "lora.r", "integer"),
    ("lora:\n  bias: some\n", "lora.bias", "none"),
    ("lora:\n  lora_dropout: 1.5\n", "lora.lora_dropout", "less than 1"),
    ("lora:\n  target_modules: []\n", "lora.target_modules", "at least 1"),
    ("model:\n  load_in_4bit: true\n  load_in_8bit: true\n", "model", "choose one"),
    ("model:\n  load_in_4bit: maybe\n", "model.load_in_4bit", "boolean"),
    ("model:\n  name: /no/such/model\n", "model.name", "does not exist"),
    ("model:\n  name: builtin:gpt-17\n", "model.name", "unknown builtin"),
    ("model:\n  max_seq_length: -2048\n", "model.max_seq_length", "greater than 0"),
    ("model:\n  chat_template: vicuna\n", "model.chat_template", "qwen3"),
    ("data:\n  - missing.jsonl\n", "data.sources.0.path", "does not exist"),
    ("data:\n  - path: data.jsonl\n    format: xml\n", "data.sources.0.format", "sharegpt"),
    ("data:\n  - path: data.jsonl\n    mode: fast\n", "data.sources.0.mode", "thinking"),
    ("data:\n  - path: data.jsonl\n    weight: -1\n", "data.sources.0.weight", "greater than 0"),
    ("data:\n  sources: [data.jsonl]\n  mix: {other: 1.0}\n", "data", "match no source"),
    ("data:\n  sources: [data.jsonl]\n  mix: {data: 0.5}\n", "data", "add up"),
    ("data:\n  eval_split: 2\n", "data.eval_split", "less than 1"),
    ("export:\n  quant: [q9_z]\n", "export.quant.0", "q4_k_m"),
    ("export:\n  formats: [onnx]\n", "export.formats.0", "merged16"),
    ("serve:\n  port: 70000\n", "serve.port", "less than or equal"),
    ("eval:\n  fail_on_regression: -0.1\n", "eval.fail_on_regression", "greater than"),
    ("modle:\n  name: x\n", "modle", "did you mean 'model'"),
    ("name: ../escape\n", "name", "plain folder name"),
]


@pytest.mark.parametrize(("text", "field", "words"), BAD_RECIPES)
def test_bad_recipe_names_the_field_and_line(tmp_path, text, field, words):
    path = write(tmp_path, text)
    with pytest.raises(TuneserveError) as caught:
        load_recipe(path)
    message = caught.value.message
    assert f"{path}:" in message, message
    assert field in message and words in message, message
    assert caught.value.hint


def test_error_line_points_at_the_offending_key(tmp_path):
    path = write(tmp_path, "lora:\n  r: 8\n\ntrain:\n  seed: 1\n  learning_rate: fast\n")
    with pytest.raises(TuneserveError) as caught:
        load_recipe(path)
    assert f"{path}:6: train.learning_rate" in caught.value.message


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "lora:\n  r: -1\ntrain:\n  optimm: sgd\n")
    with pytest.raises(TuneserveError) as caught:
        load_recipe(path)
    lines = caught.value.message.splitlines()
    assert len(lines) == 2 and "lora.r" in lines[0] and "optimm" in lines[1]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("train: [unclosed\n", ":2: not valid YAML"),
        ("- just\n- a list\n", "mapping of sections"),
        ("model: {name: builtin:smollm2-135m\n", "not valid YAML"),
    ],
)
def test_unparseable_recipes(tmp_path, text, words):
    with pytest.raises(TuneserveError) as caught:
        load_recipe(write(tmp_path, text))
    assert words in caught.value.message


def test_set_errors_name_the_override(tmp_path):
    path = write(tmp_path, "data: [data.jsonl]\n")
    with pytest.raises(TuneserveError) as caught:
        load_recipe(path, ["train.learning_rate=fast"])
    assert caught.value.message.startswith("--set train.learning_rate: train.learning_rate")
    with pytest.raises(TuneserveError, match="not KEY=VALUE"):
        load_recipe(path, ["train.learning_rate"])
    with pytest.raises(TuneserveError, match="has no item 3"):
        load_recipe(path, ["data.sources.3.weight=1"])


def test_missing_and_non_utf8_recipe_files(tmp_path):
    with pytest.raises(TuneserveError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(TuneserveError, match="not UTF-8"):
        load_recipe(bad)


def test_unknown_optimizer_lists_the_known_ones(tmp_path):
    with pytest.raises(TuneserveError, match="train.optim: .*adamw_torch"):
        load_recipe(write(tmp_path, "train:\n  optim: adamw_9bit\n"))


def test_the_serve_api_key_is_never_saved_with_the_run(tmp_path):
    """recipe.yaml is saved into models/runs/<run>/ and hashed into its manifest: no secret."""
    path = write(tmp_path, "data: [data.jsonl]\nserve:\n  api_key: s3cret-key-123\n")
    recipe = load_recipe(path)
    assert recipe.serve.api_key == "s3cret-key-123"  # used while serving
    saved = dump_recipe(recipe)
    assert "s3cret" not in saved and "api_key:" not in saved
    assert load_recipe(path, ["serve.api_key=other"]).serve.api_key == "other"
