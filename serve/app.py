"""Start engines and the gateway together: `serve_models()` for programs, `run_forever()` for the CLI.

from serve.app import serve_models

with serve_models(["base=models/base/x.gguf", "tuned=models/runs/r/gguf/r-q4_k_m.gguf"]) as s:
    client = openai.OpenAI(base_url=s.base_url, api_key=s.api_key or "none")
    client.chat.completions.create(model=s.names[0], messages=[...])
# leaving the block stops the gateway and every engine (no process is left)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serve.engines import LlamaCppEngine, VllmEngine, pick_engine
from serve.engines.base import Engine
from serve.modes import Mode, default_mode, template_knows_thinking
from serve.replicas import Replica, ReplicaPool, ScaleOut, device_groups
from toolkit.errors import TuneserveError


@dataclass(frozen=True)
class ModelSource:
    """A model to serve: a GGUF file or a merged16 folder, or `url` of an engine already running."""

    name: str
    path: Path | None = None
    url: str | None = None
    engine: str = "auto"  # for `url`: "llamacpp" adds repeat_penalty 1.0; "vllm"/"auto" do not
    knows_thinking: bool | None = None  # for `url`: its template reads enable_thinking


@dataclass
class Served:
    """What `serve_models` yields: where to send requests and under which names."""

    base_url: str  # ends in /v1, as OpenAI clients expect
    names: list[str]
    api_key: str | None
    gateway: object = field(repr=False)
    supervisors: dict[str, object] = field(repr=False, default_factory=dict)

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")


def parse_model(argument: str | Path | ModelSource) -> ModelSource:
    """`PATH` or `NAME=PATH`; the name defaults to the file's stem or the folder's name."""
    if isinstance(argument, ModelSource):
        return argument
    text = str(argument)
    name, sep, path_text = text.partition("=")
    if not sep:
        name, path_text = "", text
    path = Path(path_text).expanduser()
    if not path.exists():
        raise TuneserveError(
            f"model {path} does not exist",
            "give a .gguf file or a merged16 model folder, optionally as NAME=PATH",
        )
    if not name:
        name = path.stem if path.is_file() else path.name
    if ":" in name or not name:
        raise TuneserveError(f"model name {name!r} is not usable", "use NAME=PATH without ':'")
    return ModelSource(name=name, path=path.resolve())


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key (SPEC §7)."""
    if api_key:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TuneserveError(
            f"refusing to listen on {host} without an API key: anyone on the network could use it",
            "add --api-key KEY (clients send `Authorization: Bearer KEY`), or bind 127.0.0.1",
        )


def _make_engine(source: ModelSource, engine: str, scale: ScaleOut, devices: str | None) -> Engine:
    assert source.path is not None
    kind = pick_engine(str(source.path), source.engine if source.engine != "auto" else engine)
    if kind == "vllm":
        tensor, pipeline = scale.vllm_sizes()
        return VllmEngine(
            name=source.name,
            model_path=source.path,
            tensor_parallel_size=tensor,
            pipeline_parallel_size=pipeline,
            visible_devices=devices,
        )
    if scale.pipeline_parallel > 1:
        raise TuneserveError(
            "--pipeline-parallel is a vLLM option; llama.cpp already splits layers over --gpus",
            "drop --pipeline-parallel when serving GGUF files",
        )
    return LlamaCppEngine(
        name=source.name,
        model_path=source.path,
        gpus=scale.gpus or 0,
        threads=None if scale.gpus else scale.cpu_threads,
        visible_devices=devices,
    )


def _engine_route(
    source: ModelSource,
    engine: str,
    mode: Mode | None,
    scale: ScaleOut,
    log_dir: Path,
    ready_timeout: float,
):  # noqa: ANN202 (a ModelRoute; serve.gateway is imported lazily)
    """One engine, or `scale.replicas` engines pooled behind the model's name."""
    from serve.gateway import ModelRoute
    from serve.supervisor import Supervisor

    groups = device_groups(scale.replicas, scale.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    engines = [_make_engine(source, engine, scale, devices) for devices in groups]
    logs = [log_dir / f"{source.name}.log"] if len(engines) == 1 else []
    logs = logs or [log_dir / f"{source.name}.{i}.log" for i in range(len(engines))]
    supervisors = [
        Supervisor(built, log, ready_timeout=ready_timeout)
        for built, log in zip(engines, logs, strict=True)
    ]
    pool = None
    if len(engines) > 1:
        replicas = [
            Replica(i, built.base_url, supervisor, built)
            for i, (built, supervisor) in enumerate(zip(engines, supervisors, strict=True))
        ]
        pool = ReplicaPool(source.name, replicas)
    built = engines[0]
    template = built.chat_template()
    return ModelRoute(
        source.name,
        built.base_url,
        mode or default_mode(template),
        knows_thinking=template_knows_thinking(template),
        engine=built,
        supervisor=None if pool else supervisors[0],
        upstream_key=built.api_key,
        extra_sampling=built.extra_sampling(),
        pool=pool,
    )


def _supervisors(route) -> list:  # noqa: ANN001
    if route.pool is not None:
        return route.pool.supervisors
    return [route.supervisor] if route.supervisor is not None else []


def _routes(
    sources: list[ModelSource],
    engine: str,
    mode: Mode | None,
    stack: ExitStack,
    log_dir: Path,
    ready_timeout: float,
    scale: ScaleOut,
) -> list:
    from serve.gateway import ModelRoute

    routes = []
    scale = dataclasses.replace(scale, models=sum(source.url is None for source in sources))
    for source in sources:
        if source.url is not None:
            thinking = bool(source.knows_thinking)
            routes.append(
                ModelRoute(
                    source.name,
                    source.url.rstrip("/").removesuffix("/v1"),
                    mode or ("thinking" if thinking else "chat"),
                    knows_thinking=thinking,
                    extra_sampling={"repeat_penalty": 1.0} if source.engine == "llamacpp" else {},
                )
            )
            continue
        routes.append(_engine_route(source, engine, mode, scale, log_dir, ready_timeout))
    # start every engine before waiting on any: they load in parallel
    for route in routes:
        for supervisor in _supervisors(route):
            stack.callback(supervisor.stop)
            supervisor.launch()
    for route in routes:
        for supervisor in _supervisors(route):
            supervisor.wait_ready()
            supervisor.start_watching()
    return routes


@contextmanager
def serve_models(
    models: Sequence[str | Path | ModelSource],
    *,
    engine: str = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    mode: Mode | None = None,
    log_dir: Path | None = None,
    ready_timeout: float = 300.0,
    replicas: int = 1,
    gpus: int | None = None,
    pipeline_parallel: int = 1,
) -> Iterator[Served]:
    """Start one engine per model and the gateway in front; stop everything on exit.

    `port=0` picks a free port (see `Served.base_url`). Raises TuneserveError when an engine
    does not get ready (the message quotes its log) or the bind is unsafe. `replicas` engines
    serve each model behind its one name (serve/replicas.py); `gpus` is the GPUs of each
    engine (vLLM tensor x `pipeline_parallel`, llama.cpp's layer split).
    """
    import uvicorn

    from serve.gateway import Gateway

    check_bind(host, api_key)
    sources = [parse_model(model) for model in models]
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise TuneserveError(f"two models share a name: {names}", "name them with NAME=PATH")
    if log_dir is None:
        from toolkit.artifacts import models_dir

        log_dir = models_dir() / "logs" / "serve"
    with ExitStack() as stack:
        scale = ScaleOut(replicas, gpus, pipeline_parallel)
        routes = _routes(sources, engine, mode, stack, log_dir, ready_timeout, scale)
        gateway = Gateway(routes, api_key=api_key)
        for route in routes:
            if route.pool is not None:
                route.pool.register_metrics(gateway.registry)
        config = uvicorn.Config(
            gateway.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            # Outlast the clients' idle expiry (httpx, and so the openai SDKs, keep 5 s, as
            # uvicorn does): a server closing first races a request sent on a reused connection.
            timeout_keep_alive=75,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True, name="gateway")
        thread.start()
        stack.callback(thread.join, 10)
        stack.callback(setattr, server, "should_exit", True)
        while not server.started:
            if not thread.is_alive():
                raise TuneserveError(
                    f"the gateway could not listen on {host}:{port}",
                    "pick another --port, or stop what uses that one",
                )
            time.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        yield Served(
            f"http://{shown}:{bound}/v1",
            names,
            api_key,
            gateway,
            {route.name: route.supervisor for route in routes if route.supervisor},
        )


def run_forever(models: Sequence[str | Path | ModelSource], **options: object) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop the gateway and every engine."""
    import click

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        with serve_models(models, **options) as served:  # type: ignore[arg-type]
            click.echo(f"serving {', '.join(served.names)} at {served.base_url}", err=True)
            for name in served.names:
                click.echo(f"  {name}  (aliases {name}:thinking, {name}:chat)", err=True)
            stop.wait()
            click.echo("stopping", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
