"""The toolkit's commands (init, doctor, train, export, merge, verify, run, demo): each parses,
calls one library function, prints. `toolkit/cli/main.py` loads them on demand."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.main import print_json
from toolkit.core.errors import TuneserveError


@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing recipe.yaml.")
def init_command(directory: Path, force: bool) -> None:
    """Write a commented starter recipe.yaml and a sample dataset.

    \b
    Example:
      tuneserve init my-project
      tuneserve train my-project/recipe.yaml
    """
    from toolkit.starter import write_starter

    for path in write_starter(directory, force=force):
        click.echo(f"wrote {path}")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_command(as_json: bool) -> None:
    """Show what this machine can do: GPU, training backends, engines, disk.

    \b
    Example:
      tuneserve doctor --json
    """
    from toolkit.cli.doctor import diagnose, render

    report = diagnose()
    if as_json:
        print_json(report)
    else:
        click.echo(render(report))


def load(recipe_path: Path | None, overrides: tuple[str, ...]):
    from toolkit.recipe.loader import load_recipe

    return load_recipe(recipe_path, overrides)


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key, e.g. --set train.learning_rate=1e-4 (repeatable).",
)


@click.command("train")
@click.argument("recipe", type=click.Path(path_type=Path))
@set_option
@click.option(
    "--backend",
    type=click.Choice(["auto", "unsloth", "hf"]),
    default=None,
    help="Training backend (default: the recipe's train.backend).",
)
@click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint.")
@click.option(
    "--nproc",
    type=click.IntRange(1),
    default=None,
    help="Data-parallel processes, one per GPU (torchrun; gloo on CPU); same as train.nproc.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_command(
    recipe: Path,
    overrides: tuple[str, ...],
    backend: str | None,
    resume: bool,
    nproc: int | None,
    as_json: bool,
) -> None:
    """Fine-tune RECIPE's model; writes models/runs/<name>/ (adapter, checkpoints, metrics).

    \b
    Example:
      tuneserve train recipe.yaml --set train.max_steps=60 --backend hf
      tuneserve train recipe.yaml --nproc 2      # 2 GPUs, same global batch
    """
    from toolkit.pipeline.training import train

    if nproc is not None:
        overrides = (*overrides, f"train.nproc={nproc}")
    loaded = load(recipe, overrides)
    echo = (lambda _: None) if as_json else click.echo
    from toolkit.core.artifacts import run_dir
    from toolkit.pipeline.forgetting import prepare_replay, select_checkpoint

    folder = run_dir(loaded.run_name)
    result = train(
        loaded,
        backend=backend or loaded.train.backend,
        resume=resume,
        progress=not as_json,
        echo=echo,
        # data.replay: the served base answers the replay prompts (once per base model)
        before_data=lambda: prepare_replay(loaded, folder, echo),
        # eval.select: the best heldout checkpoint that keeps the guard becomes the adapter
        after_training=lambda: select_checkpoint(loaded, folder, echo),
    )
    if as_json:
        print_json(result.__dict__)
    else:
        click.echo(
            f"trained {result.steps} steps with {result.backend} in {result.seconds:.0f} s, "
            f"final loss {result.final_loss:.4f}; adapter in {result.run_dir / 'adapter'}"
        )


def split_list(values: tuple[str, ...]) -> list[str]:
    """`--format a --format b,c` -> [a, b, c]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.command("export")
@click.argument("run")
@click.option(
    "--format",
    "formats",
    multiple=True,
    help="lora, merged16 (vLLM), merged4, gguf; repeat or comma-separate (default: the recipe's, "
    "else lora,merged16 where vLLM serves and merged16,gguf elsewhere).",
)
@click.option("--quant", "quants", multiple=True, help="GGUF quants, e.g. q4_k_m,q8_0,f16.")
@click.option("--json", "as_json", is_flag=True, help="Print what was exported as JSON.")
def export_command(
    run: str, formats: tuple[str, ...], quants: tuple[str, ...], as_json: bool
) -> None:
    """Export RUN (a run name or folder) and check each file against its source.

    \b
    Example:
      tuneserve export my-first-run --format merged16,gguf --quant q4_k_m,q8_0
    """
    from toolkit.export.run_export import export_run, load_run
    from toolkit.pipeline.comparison import export_formats, run_engine

    _, recipe = load_run(run)
    done = export_run(
        run,
        split_list(formats) or export_formats(recipe, run_engine(recipe)),
        split_list(quants) or list(recipe.export.quant),
    )
    if as_json:
        print_json(done)
        return
    for name, report in done.items():
        figures = {k: v for k, v in report.items() if k not in ("path", "files")}
        click.echo(f"{name:<14} {report.get('path', '')}  {figures}")


@click.command("merge")
@click.option(
    "--model", "adapter", required=True, type=click.Path(path_type=Path), help="Adapter folder."
)
@click.option("--save_as", "--save-as", "save_as", required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["vllm", "gguf"]), default="vllm", show_default=True
)
@click.option("--quant", default="q8_0", show_default=True, help="GGUF quantization.")
def merge_command(adapter: Path, save_as: Path, fmt: str, quant: str) -> None:
    """Merge a LoRA adapter into its base for vLLM (16-bit safetensors) or llama.cpp (GGUF).

    \b
    Example:
      tuneserve merge --model models/runs/demo/adapter --save_as ./demo-merged --format vllm
    """
    from toolkit.export.run_export import merge_command_impl

    for path in merge_command_impl(adapter, save_as, fmt, quant):
        click.echo(f"wrote {path}")


@click.command("verify")
@click.argument("run")
def verify_command(run: str) -> None:
    """Re-check the sha256 of every file of RUN against its manifest (exit 1 on a mismatch).

    \b
    Example:
      tuneserve verify my-first-run
    """
    from toolkit.core.artifacts import run_dir, verify_manifest
    from toolkit.core.errors import CheckFailed

    folder = Path(run) if Path(run).is_dir() else run_dir(run)
    if not (folder / "manifest.json").is_file():
        raise TuneserveError(f"{folder} has no manifest.json", "is RUN a trained run?")
    problems = verify_manifest(folder)
    if problems:
        raise CheckFailed(f"{len(problems)} file(s) changed in {folder}: " + "; ".join(problems))
    click.echo(f"ok: every file in {folder} matches its manifest")


def run_and_report(recipe, backend: str | None, fresh: bool, serve: bool) -> None:
    import signal
    import threading

    from toolkit.pipeline.run import run_session, serve_api_key, success_message

    with run_session(recipe, backend=backend, fresh=fresh, serve=serve) as result:
        report = result.report_dir
        click.echo("")
        click.echo((report / "report.md").read_text())
        names = result.plan.names
        if not serve:
            host = recipe.serve.host if ":" not in recipe.serve.host else f"[{recipe.serve.host}]"
            url = f"http://{host}:{recipe.serve.port}/v1"
            click.echo(success_message(result, url, names, serve_api_key(recipe), serving=False))
            check_gate(recipe, report)
            return
        check_gate(recipe, report)
        served = result.served
        click.echo(success_message(result, served.base_url, names, served.api_key, serving=True))
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        click.echo("stopping")


def check_gate(recipe, report_dir: Path) -> None:
    """The recipe's eval.fail_on_regression: exit 1 when tuned fell below base by more."""
    threshold = recipe.eval.fail_on_regression
    if threshold is None:
        return
    from evals.gate import regressions
    from evals.report import load_report
    from toolkit.core.errors import CheckFailed

    found = regressions(load_report(report_dir / "report.json"), threshold)
    if found:
        raise CheckFailed("regression: " + "; ".join(found))


@click.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@set_option
@click.option(
    "--serve/--no-serve", default=True, help="Keep serving base and tuned after the eval."
)
@click.option("--backend", type=click.Choice(["auto", "unsloth", "hf"]), default=None)
@click.option("--fresh", is_flag=True, help="Retrain from step 0 instead of resuming a checkpoint.")
def run_command(
    recipe: Path, overrides: tuple[str, ...], serve: bool, backend: str | None, fresh: bool
) -> None:
    """Train, export, serve base and tuned, eval before/after, report; finished stages are skipped.

    \b
    Example:
      tuneserve run recipe.yaml --no-serve --set train.max_steps=60
    """
    run_and_report(load(recipe, overrides), backend, fresh, serve)


@click.command("demo")
@click.option("--serve/--no-serve", default=False, help="Keep serving after the report.")
def demo_command(serve: bool) -> None:
    """The whole `run` on the embedded SmolLM2-135M, on CPU, with no network.

    \b
    Example:
      tuneserve demo
    """
    run_and_report(load(demo_recipe(), ()), None, False, serve)


def demo_recipe() -> Path:
    """The bundled demo recipe, found through the installed package (not this file's folder,
    which moved once and broke `tuneserve demo`)."""
    from importlib import resources

    return Path(str(resources.files("toolkit") / "demo" / "recipe.yaml"))
