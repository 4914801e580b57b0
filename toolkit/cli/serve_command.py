"""`tuneserve serve`: parse, call serve.launcher.run_forever, nothing else."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.core.modes import MODES


@click.command(
    "serve",
    epilog="""Example:

  tuneserve serve models/base/smol.gguf tuned=models/runs/demo/gguf/demo-q4_k_m.gguf

Then any OpenAI client: base_url http://127.0.0.1:8000/v1, model "tuned" (or "tuned:chat").

Scale out: --replicas 2 (two engines, least-busy routing), --gpus 2 (vLLM tensor parallel).

Adapters unmerged (vLLM): tuneserve serve models/base/qwen3 --lora tuned=models/runs/x/adapter
On llama.cpp, as GGUF LoRA files: tuneserve serve base.gguf --lora tuned=tuned-lora.gguf
(python -m toolkit.export.lora_gguf converts; needs the native llama-server)

Compare page: open http://127.0.0.1:8000/ (add --report models/runs/NAME/eval for the eval
report and the training run beside the chat).

Embeddings: tuneserve serve tuned=x.gguf --embeddings embed=x.gguf (POST /v1/embeddings, model "embed")""",
)
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--engine", type=click.Choice(["auto", "vllm", "llamacpp"]), default="auto", show_default=True
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--api-key", default=None, envvar="TUNESERVE_API_KEY", help="Require this Bearer key."
)
@click.option(
    "--public-metrics",
    is_flag=True,
    help="Serve /health and /metrics without the key on a non-loopback --host (they name "
    "the served models; on loopback they are always open).",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=None,
    help="Default mode (else: thinking when the template knows enable_thinking, else chat).",
)
@click.option(
    "--name", default=None, help="Served name of a single MODEL (else NAME=PATH or stem)."
)
@click.option(
    "--ready-timeout",
    default=300.0,
    show_default=True,
    type=float,
    help="Seconds each engine may take to answer (vLLM engines sharing a GPU load in turn).",
)
@click.option(
    "--engine-timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds an engine may send nothing (no reply, no next chunk) before the request gets "
    "a 504; a request that does not stream waits for its whole generation.",
)
@click.option(
    "--replicas",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Engine processes per model, behind its one name (least-busy routing).",
)
@click.option(
    "--gpus",
    default=None,
    type=click.IntRange(1, 64),
    help="GPUs per engine: vLLM --tensor-parallel-size, llama.cpp layer split.",
)
@click.option(
    "--pipeline-parallel",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="vLLM pipeline stages over --gpus (tensor parallel = gpus / stages).",
)
@click.option(
    "--lora",
    multiple=True,
    metavar="NAME=ADAPTER",
    help="Serve a LoRA adapter unmerged on the base MODEL, as model NAME (repeatable): a PEFT "
    "folder on vLLM, a GGUF LoRA file on llama.cpp.",
)
@click.option(
    "--engine-arg",
    "engine_args",
    multiple=True,
    metavar="ARG",
    help="Pass ARG to every engine's command line, e.g. --engine-arg=--enable-log-requests.",
)
@click.option(
    "--embeddings",
    multiple=True,
    metavar="NAME=PATH",
    help="Also serve PATH for /v1/embeddings only, as model NAME (repeatable).",
)
@click.option(
    "--ctx",
    default=None,
    type=click.IntRange(256),
    help="Context tokens per request (default: what each model was trained with).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Let browser pages from ORIGIN call the API, e.g. http://localhost:3000 ('*': any). Off by default.",
)
@click.option(
    "--report",
    "report_dir",
    default=None,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Eval report folder (models/runs/NAME/eval) the page at / shows with its run.",
)
def serve_command(
    models: tuple[str, ...],
    engine: str,
    host: str,
    port: int,
    api_key: str | None,
    public_metrics: bool,
    mode: str | None,
    name: str | None,
    ready_timeout: float,
    engine_timeout: float,
    replicas: int,
    gpus: int | None,
    pipeline_parallel: int,
    lora: tuple[str, ...],
    engine_args: tuple[str, ...],
    embeddings: tuple[str, ...],
    ctx: int | None,
    cors_origins: tuple[str, ...],
    report_dir: Path | None,
) -> None:
    """Serve MODEL... (GGUF files or merged16 folders, optionally NAME=PATH) behind an
    OpenAI-compatible gateway with per-mode sampling defaults."""
    from serve.launcher import run_forever
    from toolkit.core.errors import TuneserveError

    if name is not None:
        if len(models) != 1:
            raise TuneserveError("--name names a single MODEL", "use NAME=PATH for several models")
        models = (f"{name}={models[0]}",)
    run_forever(
        list(models),
        engine=engine,
        host=host,
        port=port,
        api_key=api_key,
        public_metrics=public_metrics,
        mode=mode,
        ready_timeout=ready_timeout,
        engine_timeout=engine_timeout,
        replicas=replicas,
        gpus=gpus,
        pipeline_parallel=pipeline_parallel,
        lora=lora,
        engine_args=engine_args,
        embeddings=embeddings,
        ctx=ctx,
        cors_origins=cors_origins,
        report_dir=report_dir,
    )
