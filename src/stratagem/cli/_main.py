"""Entry point and global options of the ``stratagem`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from stratagem import __version__
from stratagem.errors import ConfigError, RunError

app = typer.Typer(
    name="stratagem",
    help="Multi-agent LLM workflows that know where the tokens went.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_RUN_FAILURE, EXIT_USER_ERROR = 0, 1, 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stratagem {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """stratagem: plan, decompose, solve and judge with one token ledger."""


@app.command()
def ablate(
    config: Annotated[Path, typer.Argument(help="Ablation grid (TOML).")],
) -> None:
    """Run an ablation grid of topologies x budgets x seeds x task suites."""
    raise RunError(
        "`stratagem ablate` is not yet available in this version: the ablation runner "
        "lands with the task-suites issue. The ledger and budgets are usable from Python "
        "(see the README)."
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user's mistake exits 2 with one line, a run failure exits 1."""
    try:
        app(args=argv, standalone_mode=False)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except RunError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_RUN_FAILURE)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (unknown command, missing argument) from typer's bundled click.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"error: {exc}", err=True)
        sys.exit(int(getattr(exc, "exit_code", EXIT_USER_ERROR)))
