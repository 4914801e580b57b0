"""The `tuneserve` command: a Click group whose commands each parse, call one library function, print.

Commands are imported lazily and their modules import only Click at the top, so
`tuneserve --help` stays instant; torch and friends load inside the functions that need them.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from toolkit.errors import TuneserveError

# name -> "module:attribute" of a click.Command; serve/ and evals/ own their commands.
COMMANDS = {
    "init": "toolkit.cli:init_command",
    "doctor": "toolkit.cli:doctor_command",
    "train": "toolkit.cli:train_command",
}


class TuneserveGroup(click.Group):
    """Loads commands on demand and turns TuneserveError into `error:`/`hint:` and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TuneserveError as exc:
            if _debug(ctx):
                raise
            report_error(exc.message, exc.hint)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug, not a user error: one line unless --debug
            if _debug(ctx):
                raise
            report_error(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with `tuneserve --debug ...` for the traceback and report it",
            )
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("TUNESERVE_DEBUG") == "1"


def report_error(message: str, hint: str | None) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(cls=TuneserveGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="tuneserve")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Fine-tune a chat model, export it, serve it OpenAI-compatible, and eval before/after.

    \b
    Example:
      tuneserve init my-project && cd my-project
      tuneserve run recipe.yaml
    """
    ctx.obj = {"debug": debug}


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
    from toolkit.doctor import diagnose, render

    report = diagnose()
    if as_json:
        print_json(report)
    else:
        click.echo(render(report))


def load(recipe_path: Path | None, overrides: tuple[str, ...]):
    from toolkit.recipe_loader import load_recipe

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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_command(
    recipe: Path, overrides: tuple[str, ...], backend: str | None, resume: bool, as_json: bool
) -> None:
    """Fine-tune RECIPE's model; writes models/runs/<name>/ (adapter, checkpoints, metrics).

    \b
    Example:
      tuneserve train recipe.yaml --set train.max_steps=60 --backend hf
    """
    from toolkit.train import train

    loaded = load(recipe, overrides)
    echo = (lambda _: None) if as_json else click.echo
    result = train(
        loaded,
        backend=backend or loaded.train.backend,
        resume=resume,
        progress=not as_json,
        echo=echo,
    )
    if as_json:
        print_json(result.__dict__)
    else:
        click.echo(
            f"trained {result.steps} steps with {result.backend} in {result.seconds:.0f} s, "
            f"final loss {result.final_loss:.4f}; adapter in {result.run_dir / 'adapter'}"
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
