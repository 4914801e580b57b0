"""The `tuneserve` command: a Click group that loads each command on demand and turns
TuneserveError into `error:`/`hint:` and an exit code.

Commands are imported lazily and their modules import only Click at the top, so
`tuneserve --help` stays instant; torch and friends load inside the functions that need them.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import click

from toolkit.core.errors import EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_INTERRUPTED, TuneserveError

# name -> "module:attribute" of a click.Command
COMMANDS = {
    "init": "toolkit.cli.commands:init_command",
    "doctor": "toolkit.cli.commands:doctor_command",
    "train": "toolkit.cli.commands:train_command",
    "export": "toolkit.cli.commands:export_command",
    "merge": "toolkit.cli.commands:merge_command",
    "verify": "toolkit.cli.commands:verify_command",
    "run": "toolkit.cli.commands:run_command",
    "demo": "toolkit.cli.commands:demo_command",
    "serve": "toolkit.cli.serve_command:serve_command",
    "eval": "toolkit.cli.eval_command:eval_command",
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
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug, not a user error: one line unless --debug
            if _debug(ctx):
                raise
            report_error(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with `tuneserve --debug ...` for the traceback and report it",
            )
            ctx.exit(EXIT_INTERNAL)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("TUNESERVE_DEBUG") == "1"


def report_error(message: str, hint: str | None) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(
    cls=TuneserveGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\n" + EXIT_CODES_HELP,
)
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
