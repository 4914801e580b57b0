"""Hub ids in `model.name`: told apart from folders without a network, downloaded for real from a
stand-in Hub on 127.0.0.1 (a resume after a dropped connection included), failures as one-line
errors through the CLI, and an offline Hub cache that trains, exports and is recorded in the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_standin import HubFile, HubRepo, StandInHub, write_offline_cache
from toolkit.base_models.builtin import describe_model
from toolkit.base_models.hub import HubId, parse_hub_id
from toolkit.base_models.prequantized import is_prequantized_4bit
from toolkit.core.errors import TuneserveError
from toolkit.recipe.loader import load_recipe

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "toolkit" / "demo" / "facts.jsonl"
SMOLLM2 = "tuneserve-test/smollm2-135m"
# Files a Hub repo holds that training and export never read: none may be downloaded.
UNREAD = {
    "pytorch_model.bin": b"\0" * 4096,
    "onnx/model.onnx": b"\1" * 1024,
    "original/tokenizer.model": b"\2" * 64,
    "consolidated.safetensors": b"\3" * 2048,
    "README.md": b"# SmolLM2 for tests\n",
}
TOKEN, GRANTED = "hf_test_private_token", "hf_test_granted_token"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Qwen/Qwen3-8B", HubId("Qwen/Qwen3-8B")),
        ("unsloth/Qwen3-14B-unsloth-bnb-4bit", HubId("unsloth/Qwen3-14B-unsloth-bnb-4bit")),
        (
            "meta-llama/Llama-3.1-8B-Instruct@main",
            HubId("meta-llama/Llama-3.1-8B-Instruct", "main"),
        ),
        ("org/name@refs/pr/3", HubId("org/name", "refs/pr/3")),
        ("org/name@" + "a" * 40, HubId("org/name", "a" * 40)),
        ("builtin:smollm2-135m", None),
        ("./org/name", None),
        ("/models/org/name", None),
        ("~/org/name", None),
        ("Qwen3-8B", None),
        ("a/b/c", None),
        ("org--x/name", None),
        ("org/na..me", None),
        ("org/name.git", None),
        ("org/name@", None),
        ("org/na me", None),
        ("org/" + "n" * 100, None),
    ],
)
def test_hub_ids_are_told_from_paths_and_builtins(text, expected):
    assert parse_hub_id(text) == expected


def write_recipe(folder: Path, model_name: str) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        f"name: hubtest\nmodel:\n  name: {model_name}\n  max_seq_length: 96\n"
        f"data:\n  - {DEMO_DATA}\ntrain:\n  backend: hf\n  max_steps: 2\n"
    )
    return recipe


def test_recipe_keeps_a_hub_id_as_written_and_an_existing_folder_wins(tmp_path):
    assert (
        load_recipe(write_recipe(tmp_path, "Qwen/Qwen3-8B@v1.0")).model.name == "Qwen/Qwen3-8B@v1.0"
    )
    (tmp_path / "Qwen" / "Qwen3-8B").mkdir(parents=True)
    local = load_recipe(write_recipe(tmp_path, "Qwen/Qwen3-8B")).model.name
    assert local == str(tmp_path / "Qwen" / "Qwen3-8B")


def test_recipe_refuses_a_missing_folder_naming_the_three_forms(tmp_path):
    with pytest.raises(TuneserveError) as caught:
        load_recipe(write_recipe(tmp_path, "./models/Qwen3-8B"))
    message = str(caught.value)
    assert "model.name" in message and "does not exist" in message
    assert "Hub id" in message and "local model folder" in message and "builtin:" in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # unsloth/Qwen3-8B-unsloth-bnb-4bit's config.json (the keys that matter)
        (
            {
                "quantization_config": {
                    "quant_method": "bitsandbytes",
                    "_load_in_4bit": True,
                    "load_in_4bit": True,
                    "bnb_4bit_quant_type": "nf4",
                }
            },
            True,
        ),
        ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}}, False),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}, False),
        ({"architectures": ["Qwen3ForCausalLM"]}, False),
        (None, False),
    ],
)
def test_prequantized_4bit_is_read_from_the_config(tmp_path, config, expected):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    assert is_prequantized_4bit(tmp_path) is expected


def test_describe_model_records_the_hub_repo_and_commit(tmp_path):
    snapshot = tmp_path / "models--org--name" / "snapshots" / ("c0ffee" * 7)[:40]
    assert describe_model("org/name@main", snapshot)["hub"] == {
        "repo_id": "org/name",
        "revision": "main",
        "commit": snapshot.name,
    }
    assert "hub" not in describe_model(str(tmp_path), tmp_path)
    assert "hub" not in describe_model("builtin:smollm2-135m", tmp_path)


# --- the download path, for real, against a stand-in Hub -------------------------------------


def tiny_repo(repo_id: str, weights: dict[str, bytes] | None = None, **kwargs) -> HubRepo:
    files = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}'}
    files |= weights if weights is not None else {"model.safetensors": os.urandom(4096)}
    return HubRepo(repo_id, {n: HubFile(n, d) for n, d in files.items()}, **kwargs)


@pytest.fixture(scope="module")
def smollm2_repo(base_model) -> HubRepo:
    return HubRepo.from_folder(SMOLLM2, base_model, extra=UNREAD)


@pytest.fixture(scope="module")
def hub(smollm2_repo):
    repos = [
        smollm2_repo,
        tiny_repo("tuneserve-test/private", token=TOKEN),
        tiny_repo("tuneserve-test/gated", token=GRANTED, gated=True),
        tiny_repo("tuneserve-test/bin-only", {"pytorch_model.bin": b"\0" * 4096}),
        tiny_repo("tuneserve-test/outage", down=503),
    ]
    with StandInHub(repos) as running:
        yield running


def hub_env(home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """A fresh process's environment: no offline switch or token from the test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return env | {"HF_HOME": str(home), "HF_ENDPOINT": endpoint, "PYTHONPATH": str(REPO)} | extra


RESOLVE = (
    "import sys\nfrom toolkit.base_models.builtin import resolve_model\nfrom toolkit.core.errors import TuneserveError\n"
    "try:\n    print(resolve_model(sys.argv[1]))\n"
    "except TuneserveError as exc:\n    print(f'error: {exc}\\nhint: {exc.hint}', file=sys.stderr)\n"
    "    sys.exit(2)\n"
)


def resolve(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`resolve_model` in a fresh process: huggingface_hub reads HF_* when it is imported."""
    return subprocess.run(
        [sys.executable, "-c", RESOLVE, name], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_download_fetches_only_what_training_reads_byte_for_byte(hub, smollm2_repo, tmp_path):
    hub.requests.clear()
    env = hub_env(tmp_path / "hf-home", hub.endpoint)
    done = resolve(SMOLLM2, env)
    assert done.returncode == 0, done.stderr
    snapshot = Path(done.stdout.strip())
    cache = tmp_path / "hf-home" / "hub" / "models--tuneserve-test--smollm2-135m"
    assert snapshot == cache / "snapshots" / smollm2_repo.commit  # HF_HOME honoured
    assert (cache / "refs" / "main").read_text() == smollm2_repo.commit
    wanted = set(smollm2_repo.files) - set(UNREAD)
    assert {p.name for p in snapshot.iterdir()} == wanted
    for name in wanted:
        assert (snapshot / name).read_bytes() == smollm2_repo.files[name].data, name
    for name in UNREAD:
        assert not hub.gets_of(smollm2_repo.files[name]), f"{name} was downloaded"
    assert f"Fetching {len(wanted)} files" in done.stderr  # huggingface_hub's progress bar

    hub.requests.clear()
    again = resolve(SMOLLM2, env)
    assert again.returncode == 0 and Path(again.stdout.strip()) == snapshot
    assert not [r for r in hub.requests if r.method == "GET" and "/api/" not in r.path]


@pytest.mark.slow
def test_download_resumes_after_the_connection_drops_mid_file(hub, smollm2_repo, tmp_path):
    hub.requests.clear()
    weights = smollm2_repo.files["model.safetensors"]
    hub.drop_once(weights, after=len(weights.data) // 3)
    env = hub_env(tmp_path / "home", hub.endpoint, HF_HUB_CACHE=str(tmp_path / "cache"))
    done = resolve(SMOLLM2, env)
    assert done.returncode == 0, done.stderr
    first, retry = hub.gets_of(weights)
    assert "range" not in first.headers
    resumed_at = int(retry.headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= len(weights.data) // 3  # the bytes already on disk were kept
    downloaded = Path(done.stdout.strip()) / "model.safetensors"
    assert str(downloaded).startswith(str(tmp_path / "cache"))  # HF_HUB_CACHE honoured
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == weights.sha256


@pytest.mark.slow
def test_private_repo_downloads_with_hf_token_which_never_leaves_the_hub(hub, tmp_path):
    hub.requests.clear()
    done = resolve("tuneserve-test/private", hub_env(tmp_path, hub.endpoint, HF_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr
    api = [r for r in hub.requests if "/tuneserve-test/private" in r.path]
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert api and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)
    assert cdn and not any("authorization" in r.headers for r in cdn)


def assert_one_line_error(done: subprocess.CompletedProcess, name: str, error: str, hint: str):
    """Exit 2 with an `error:` line naming the id and a `hint:` line; no traceback."""
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert len(lines) == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: model.name {name}: ") and error in lines[0], lines[0]
    assert lines[1].startswith("hint: ") and hint in lines[1], lines[1]


# (case, model.name, extra environment, words of the error line, words of the hint)
CLI_FAILURES = [
    (
        "401 private, anonymous",
        "tuneserve-test/private",
        {},
        "has no repo tuneserve-test/private (or it is private and no token was sent)",
        "set HF_TOKEN or run `hf auth login`",
    ),
    (
        "404 repo",
        "tuneserve-test/no-such-model",
        {},
        "has no repo tuneserve-test/no-such-model",
        "check the id on the Hub",
    ),
    (
        "404 revision",
        SMOLLM2 + "@v9.9",
        {},
        f"revision 'v9.9' does not exist in Hub repo {SMOLLM2}",
        "drop '@v9.9'",
    ),
    (
        "offline, empty cache",
        SMOLLM2,
        {"HF_HUB_OFFLINE": "1"},
        "HF_HUB_OFFLINE is set and the Hub cache",
        "unset HF_HUB_OFFLINE",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "name", "extra", "error", "hint"), CLI_FAILURES, ids=[c[0] for c in CLI_FAILURES]
)
def test_hub_failures_are_one_line_errors_from_the_cli(
    hub, tmp_path, case, name, extra, error, hint
):
    env = hub_env(tmp_path / "home", hub.endpoint, TUNESERVE_MODELS_DIR=str(tmp_path / "models"))
    command = [sys.executable, "-m", "toolkit.cli", "train", str(write_recipe(tmp_path, name))]
    done = subprocess.run(command, env=env | extra, capture_output=True, text=True, timeout=300)
    assert_one_line_error(done, name, error, hint)


# The same errors, through resolve_model alone (the CLI prints them the same way, as above).
RESOLVE_FAILURES = [
    (
        "401 unknown token",
        "tuneserve-test/private",
        {"HF_TOKEN": "hf_wrong"},
        "refused the token in use (HTTP 401)",
        "set a valid token in HF_TOKEN",
    ),
    (
        "403 gated, anonymous",
        "tuneserve-test/gated",
        {},
        "the Hub repo is gated and no token was sent",
        "accept the license",
    ),
    (
        "403 gated, not granted",
        "tuneserve-test/gated",
        {"HF_TOKEN": TOKEN},
        "has not been granted access",
        "accept the license",
    ),
    (
        "no network",
        SMOLLM2,
        {"HF_ENDPOINT": "http://127.0.0.1:9"},
        "cannot reach the Hub at http://127.0.0.1:9",
        "HF_ENDPOINT",
    ),
    (
        "503 Hub outage",
        "tuneserve-test/outage",
        {},
        "answered HTTP 503 and the cache",
        "HF_HUB_OFFLINE=1",
    ),
    (
        ".bin weights only",
        "tuneserve-test/bin-only",
        {},
        "no .safetensors weights (only pytorch_model.bin)",
        "save_pretrained",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "name", "extra", "error", "hint"),
    RESOLVE_FAILURES,
    ids=[c[0] for c in RESOLVE_FAILURES],
)
def test_hub_failures_are_one_line_errors(hub, tmp_path, case, name, extra, error, hint):
    done = resolve(name, hub_env(tmp_path, hub.endpoint) | extra)
    assert_one_line_error(done, name, error, hint)


# --- an offline Hub cache: train, export, recorded ------------------------------------------


@pytest.mark.slow
def test_offline_hub_cache_trains_exports_and_records_the_commit(smollm2_repo, tmp_path):
    cache = tmp_path / "hub-cache"
    read = sorted(set(smollm2_repo.files) - set(UNREAD))
    snapshot = write_offline_cache(smollm2_repo, cache, only=read)
    # Offline, with an endpoint nothing listens on: any attempt to reach a Hub would fail.
    env = hub_env(
        tmp_path / "home", "http://127.0.0.1:9", HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1"
    )
    env["TUNESERVE_MODELS_DIR"] = str(tmp_path / "models")
    settings = [
        "train.per_device_train_batch_size=1",
        "train.gradient_accumulation_steps=1",
        "train.warmup_steps=0",
        "lora.r=4",
        "lora.lora_alpha=4",
    ]
    train = [sys.executable, "-m", "toolkit.cli", "train", str(write_recipe(tmp_path, SMOLLM2))]
    train += [f"--set={s}" for s in settings]
    done = subprocess.run(train, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    export = [sys.executable, "-m", "toolkit.cli", "export", "hubtest", "--format", "merged16"]
    done = subprocess.run(export, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "models" / "runs" / "hubtest"
    manifest = json.loads((run / "manifest.json").read_text())
    base = manifest["base_model"]
    assert base["name"] == SMOLLM2 and base["path"] == str(snapshot)
    assert base["hub"] == {"repo_id": SMOLLM2, "revision": None, "commit": smollm2_repo.commit}
    assert base["sha256"] == smollm2_repo.files["model.safetensors"].sha256
    assert manifest["training"]["steps"] == 2
    assert (run / "merged16" / "model.safetensors").is_file() and "merged16" in manifest["exports"]
    assert f"name: {SMOLLM2}" in (run / "recipe.yaml").read_text()
