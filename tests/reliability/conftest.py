"""The reliability suite's shared servers (a fast fake engine, gateways in front of it and of
real llama.cpp) and its counts, printed in pytest's terminal summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability import processes
from tests.reliability.counts import COUNTS, GROUP_OF, GROUPS, MEASURES, passed_fault_tests

API_KEY = "reliability-key"


@pytest.fixture(scope="session")
def fake_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[processes.Child]:
    """The fast OpenAI-shaped engine (tests/reliability/fake_engine.py), 5 ms a chunk."""
    log = tmp_path_factory.mktemp("fake-engine") / "engine.log"
    with processes.fake_engine(log) as child:
        yield child


@pytest.fixture(scope="session")
def fake_gateway(fake_engine: processes.Child, tmp_path_factory: pytest.TempPathFactory):
    """The real gateway, in this process, serving the fake engine as `fake` behind API_KEY."""
    from serve.launcher import serve_models
    from serve.model_source import ModelSource

    source = ModelSource(name="fake", url=fake_engine.url, engine="vllm")
    with serve_models([source], api_key=API_KEY, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="session")
def real_serve(base_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """`tuneserve serve smol=<embedded SmolLM2 GGUF> --api-key API_KEY` in a process of its own."""
    log = tmp_path_factory.mktemp("real-serve") / "serve.log"
    with processes.tuneserve_serve([f"smol={base_gguf}"], log, API_KEY) as child:
        yield child


def engine_stats(fake_engine: processes.Child) -> dict[str, int]:
    import httpx

    return httpx.get(f"{fake_engine.url}/stats", timeout=10).json()


def pytest_terminal_summary(terminalreporter) -> None:
    passed = [report.nodeid for report in terminalreporter.stats.get("passed", [])]
    counts = dict(COUNTS)
    groups = dict(GROUP_OF)
    for what, n in passed_fault_tests(passed).items():
        counts[what], groups[what] = n, "faults survived"
    if not counts:
        return
    terminalreporter.section("reliability counts")
    for group in GROUPS:
        items = {what: n for what, n in counts.items() if groups[what] == group}
        terminalreporter.write_line(f"{group}: {sum(items.values())}")
        for what, n in sorted(items.items()):
            terminalreporter.write_line(f"  {n:>8}  {what}")
    for what, value in MEASURES.items():
        terminalreporter.write_line(f"measured: {what}: {value}")
