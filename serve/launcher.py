"""Start engines and the gateway together (the launcher of serving): `serve_models()` for programs, `run_forever()` for the CLI.

from serve.launcher import serve_models

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
from serve.engines.base import Engine, keep_free
from serve.gateway import Gateway
from serve.identity import model_identity
from serve.model_route import ModelRoute
from serve.model_source import ModelSource, attach_adapters, parse_model
from serve.page import find_report_dir
from serve.replicas import Replica, ReplicaPool, ScaleOut, device_groups
from serve.supervisor import Supervisor
from serve.upstream import READ_TIMEOUT
from toolkit.core.artifacts import models_dir
from toolkit.core.errors import TuneserveError
from toolkit.core.modes import Mode, default_mode, template_knows_thinking


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


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key (SPEC §7)."""
    if api_key:
        return
    if not is_loopback(host):
        raise TuneserveError(
            f"refusing to listen on {host} without an API key: anyone on the network could use it",
            "add --api-key KEY (clients send `Authorization: Bearer KEY`), or bind 127.0.0.1",
        )


def _engine_kind(source: ModelSource, engine: str) -> str:
    assert source.path is not None
    return pick_engine(str(source.path), source.engine if source.engine != "auto" else engine)


def _make_engine(source: ModelSource, engine: str, scale: ScaleOut, devices: str | None) -> Engine:
    assert source.path is not None
    if _engine_kind(source, engine) == "vllm":
        tensor, pipeline = scale.vllm_sizes()
        return VllmEngine(
            name=source.name,
            model_path=source.path,
            embeddings=source.embeddings,
            max_model_len=source.ctx,
            tensor_parallel_size=tensor,
            pipeline_parallel_size=pipeline,
            visible_devices=devices,
            gpu_memory_utilization=scale.vllm_memory_fraction,
            lora_modules=dict(source.adapters),
            extra_args=list(source.engine_args),
        )
    peft = [path for _, path in source.adapters if path.suffix != ".gguf"]
    if peft:
        raise TuneserveError(
            f"llama.cpp serves LoRA adapters as GGUF files, and {peft[0]} is a PEFT folder",
            "convert it (python -m toolkit.export.lora_gguf) or serve the run's GGUF export",
        )
    if scale.pipeline_parallel > 1:
        raise TuneserveError(
            "--pipeline-parallel is a vLLM option; llama.cpp already splits layers over --gpus",
            "drop --pipeline-parallel when serving GGUF files",
        )
    return LlamaCppEngine(
        name=source.name,
        model_path=source.path,
        embeddings=source.embeddings,
        n_ctx=source.ctx,
        gpus=scale.gpus or 0,
        threads=None if scale.gpus else scale.cpu_threads,
        visible_devices=devices,
        extra_args=list(source.engine_args),
        lora_files=[path for _, path in source.adapters],
    )


def _adapter_bodies(source: ModelSource, built: Engine) -> dict[str, dict]:
    """Per served name, the fields that pick its adapter on an engine that swaps adapters per
    request (llama.cpp); vLLM picks by the model name and needs none."""
    body_for = getattr(built, "adapter_body", None)
    if body_for is None:
        return {}
    return {name: body_for(index) for index, (name, _) in enumerate(source.adapters)}


def _engine_route(
    source: ModelSource,
    engine: str,
    mode: Mode | None,
    scale: ScaleOut,
    log_dir: Path,
    ready_timeout: float,
) -> list[ModelRoute]:
    """One engine, or `scale.replicas` engines pooled behind the model's name; each adapter
    it carries is one more route to the same engines, under the adapter's own name (vLLM
    answers to the LoRA module's name in `model`)."""
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
        for replica, supervisor in zip(replicas, supervisors, strict=True):
            supervisor.keep_pointed(replica)
    built = engines[0]
    template = built.chat_template()
    bodies = _adapter_bodies(source, built)
    assert source.path is not None
    identities = [model_identity(source.path)]
    identities += [model_identity(source.path, (adapter,)) for _, adapter in source.adapters]
    routes = [
        ModelRoute(
            name,
            built.base_url,
            mode or default_mode(template),
            knows_thinking=template_knows_thinking(template),
            engine=built,
            supervisor=None if pool else supervisors[0],
            upstream_key=built.api_key,
            extra_sampling=built.extra_sampling(),
            pool=pool,
            extra_body=bodies.get(name, {}),
            identity=identity,
        )
        for name, identity in zip(source.served_names, identities, strict=True)
    ]
    for route in routes:
        if route.supervisor is not None:
            route.supervisor.keep_pointed(route)
    return routes


def _supervisors(routes: list[ModelRoute]) -> list[Supervisor]:
    """Every engine's supervisor once (an adapter's route shares its base model's engines)."""
    found: dict[int, Supervisor] = {}
    for route in routes:
        owned = route.pool.supervisors if route.pool is not None else [route.supervisor]
        found.update((id(s), s) for s in owned if s is not None)
    return list(found.values())


def _share_a_gpu(one: Engine, other: Engine) -> bool:
    """Whether two engines may use the same GPU (no CUDA_VISIBLE_DEVICES: every GPU)."""
    if one.visible_devices is None or other.visible_devices is None:
        return True
    return bool(set(one.visible_devices.split(",")) & set(other.visible_devices.split(",")))


def _routes(
    sources: list[ModelSource],
    engine: str,
    mode: Mode | None,
    stack: ExitStack,
    log_dir: Path,
    ready_timeout: float,
    scale: ScaleOut,
) -> list[ModelRoute]:
    routes = []
    started = [source for source in sources if source.url is None]
    vllm = sum(_engine_kind(source, engine) == "vllm" for source in started)
    scale = dataclasses.replace(scale, models=len(started), vllm_models=vllm)
    for source in sources:
        if source.url is not None:
            thinking = bool(source.knows_thinking)
            llama = source.engine == "llamacpp"
            routes.append(
                ModelRoute(
                    source.name,
                    source.url.rstrip("/").removesuffix("/v1"),
                    mode or ("thinking" if thinking else "chat"),
                    knows_thinking=thinking,
                    extra_sampling={"repeat_penalty": 1.0} if llama else {},
                    external_reuses_connections=not llama,
                )
            )
            continue
        routes += _engine_route(source, engine, mode, scale, log_dir, ready_timeout)
    supervisors = _supervisors(routes)
    for supervisor in supervisors:
        stack.callback(supervisor.stop)
    # Engines load in parallel, except vLLM engines that share a GPU: each sizes its KV cache
    # from the GPU memory it sees go while it profiles, so a neighbour loading at the same time
    # leaves it almost none (seen on an H200: 0.17 GiB for the second of two 0.6B models, which
    # then refused to start). Such an engine waits until those it shares a GPU with are ready.
    loading: list = []
    for supervisor in supervisors:
        if supervisor.engine.kind == "vllm":
            for neighbour in [n for n in loading if _share_a_gpu(n.engine, supervisor.engine)]:
                neighbour.wait_ready()
                loading.remove(neighbour)
            loading.append(supervisor)
        supervisor.launch()
    for supervisor in supervisors:
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
    lora: Sequence[str] = (),
    engine_args: Sequence[str] = (),
    embeddings: Sequence[str] = (),
    ctx: int | None = None,
    cors_origins: Sequence[str] = (),
    report_dir: Path | None = None,
    engine_timeout: float = READ_TIMEOUT,
    public_metrics: bool = False,
) -> Iterator[Served]:
    """Start one engine per model and the gateway in front; stop everything on exit.

    `port=0` picks a free port (see `Served.base_url`). Raises TuneserveError when an engine
    does not get ready (the message quotes its log) or the bind is unsafe. `replicas` engines
    serve each model behind its one name (serve/replicas.py); `gpus` is the GPUs of each
    engine (vLLM tensor x `pipeline_parallel`, llama.cpp's layer split). `lora` (NAME=PATH)
    serves adapters unmerged next to the one base model (vLLM); `engine_args` go verbatim to
    every engine's command line. `embeddings` (NAME=PATH) are served for /v1/embeddings;
    `ctx` caps each request's context (default: what each model was trained with);
    `cors_origins` lets browser pages from those origins call the gateway. `report_dir` (an
    eval folder) is what the compare page at `/` shows beside the chat: the report and the
    training run it belongs to. An engine that sends nothing for `engine_timeout` seconds gets
    its request answered 504. With a key on a non-loopback host, /health and /metrics (which
    name the served models) need the key too, unless `public_metrics`.
    """
    import uvicorn

    check_bind(host, api_key)
    if report_dir is not None:
        report_dir = find_report_dir(Path(report_dir))
    sources = attach_adapters([parse_model(model) for model in models], lora)
    sources += [dataclasses.replace(parse_model(e), embeddings=True) for e in embeddings]
    if ctx is not None:
        sources = [dataclasses.replace(source, ctx=ctx) for source in sources]
    if engine_args:
        sources = [
            dataclasses.replace(source, engine_args=tuple(engine_args))
            if source.url is None
            else source
            for source in sources
        ]
    names = [name for source in sources for name in source.served_names]
    if len(set(names)) != len(names):
        raise TuneserveError(f"two models share a name: {names}", "name them with NAME=PATH")
    if log_dir is None:
        log_dir = models_dir() / "logs" / "serve"
    if port:
        keep_free(port)
    with ExitStack() as stack:
        scale = ScaleOut(replicas, gpus, pipeline_parallel)
        routes = _routes(sources, engine, mode, stack, log_dir, ready_timeout, scale)
        gateway = Gateway(
            routes,
            api_key=api_key,
            cors_origins=cors_origins,
            report_dir=report_dir,
            engine_timeout=engine_timeout,
            key_for_status=bool(api_key) and not is_loopback(host) and not public_metrics,
        )
        for pool in {id(r.pool): r.pool for r in routes if r.pool is not None}.values():
            pool.register_metrics(gateway.registry)
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
            click.echo(f"compare page: {served.root_url}/", err=True)
            stop.wait()
            click.echo("stopping", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
