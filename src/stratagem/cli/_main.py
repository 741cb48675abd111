"""Entry point and global options of the ``stratagem`` command."""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer

from stratagem import __version__
from stratagem.cli._ablate import ablate_command
from stratagem.cli._audit import audit_command
from stratagem.cli._common import state
from stratagem.cli._report import report_command
from stratagem.cli._run import run_command
from stratagem.cli._serve import serve_command
from stratagem.cli._tasks import tasks_command
from stratagem.cli._view import view_command
from stratagem.errors import ConfigError, RunError
from stratagem.logging import configure_logging

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
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log output: json or console.")
    ] = "console",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every model call (llm.call events).")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only results and errors; no progress.")
    ] = False,
) -> None:
    """stratagem: plan, decompose, solve and judge with one token ledger."""
    state.quiet = quiet
    level = "info" if verbose else ("error" if quiet else "warning")
    configure_logging(fmt=log_format, level=level)  # type: ignore[arg-type]


app.command("run")(run_command)
app.command("ablate")(ablate_command)
app.command("audit")(audit_command)
app.command("report")(report_command)
app.command("tasks")(tasks_command)
app.command("serve-local")(serve_command)
app.command("view")(view_command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user's mistake exits 2 with one line, a run failure exits 1."""
    if argv is None:
        # A process of its own (the console script): everything imported so far lives as
        # long as the process, so keep it out of the garbage collector's full collections,
        # which otherwise re-scan it every few hundred LangGraph branches (a simulated
        # sweep runs ~12% faster). In-process callers (tests, notebooks) are left alone.
        gc.freeze()
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            # typer returns (not raises) the code of a typer.Exit and of a KeyboardInterrupt.
            if code == 130:
                typer.echo("interrupted", err=True)
            sys.exit(code)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except RunError as exc:
        typer.echo(f"run failed: {exc}", err=True)
        sys.exit(EXIT_RUN_FAILURE)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (unknown command or option, missing argument, a value of the wrong
        # type) from typer's bundled click: one line like any other mistake, not click's
        # three ("Usage: ...", "Try ...", "Error: ..."). Its classes are private, so they
        # are told apart by name and attributes, as typer does itself.
        show = getattr(exc, "show", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and callable(show):
            show()  # `stratagem` alone: the help is the message
        else:
            typer.echo(f"error: {_usage_message(exc)}", err=True)
        sys.exit(int(getattr(exc, "exit_code", EXIT_USER_ERROR)))
    except OSError as exc:
        # A path the user gave that cannot be read or written.
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(EXIT_USER_ERROR)


def _usage_message(exc: Exception) -> str:
    """Click's message on one line, in our style, with where to find help."""
    format_message = getattr(exc, "format_message", None)
    message = str(format_message() if callable(format_message) else exc)
    message = " ".join(message.split()).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():  # "No such option" but not "URL"
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "stratagem"
    return f"{message} (see '{command} --help')"
