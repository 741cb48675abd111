"""Shared plumbing of the reliability tests: quiet logs and an in-process CLI runner.

Every test here leaves structlog and the stdlib loggers of our dependencies as it found them,
so the suites that run after this folder still see the default logging set-up.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from stratagem.logging import configure_logging

_LIB_LOGGERS = ("openai", "httpx", "httpx2", "langgraph")


def reset_logging() -> None:
    """Undo :func:`configure_logging`: structlog's defaults, and the stdlib loggers of our
    dependencies back to no handler, propagating, no level."""
    structlog.reset_defaults()
    for name in _LIB_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers = []
        lib.propagate = True
        lib.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Warnings and errors only, into a buffer: the tests assert on the ledger, not on logs."""
    configure_logging(fmt="json", level="warning", stream=io.StringIO(), cache_loggers=False)
    yield
    reset_logging()


@dataclass(frozen=True)
class CliOutcome:
    """What one in-process ``stratagem`` invocation did."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """Non-blank lines written to standard error."""
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(argv: list[str]) -> CliOutcome:
    """Run ``stratagem ARGV`` in this process, as the console script would.

    Output is captured with ``redirect_stdout``/``redirect_stderr`` (not capsys, which
    hypothesis cannot share between examples). The CLI configures logging with cached
    loggers; here it gets uncached ones so that nothing bound to this call's captured stream
    outlives it, and logging is reset afterwards. The embedded model may not start (it would
    take minutes). Any exception other than ``SystemExit`` propagates: that is exactly the
    traceback a user would see.
    """
    from stratagem.agents import LocalModelServer
    from stratagem.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with pytest.MonkeyPatch.context() as mp:
        # The CLI's seams, replaced by name (tests never import private modules).
        mp.setattr("stratagem.cli._main.configure_logging",
                   functools.partial(configure_logging, cache_loggers=False))
        mp.setattr(LocalModelServer, "start", _no_embedded_model)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(argv)
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        finally:
            reset_logging()
    return CliOutcome(code, out.getvalue(), err.getvalue())


def _no_embedded_model(*args: object) -> Any:
    raise AssertionError("a reliability test tried to start the embedded model (backend "
                         "'local'); give it backend 'simulated' or a fake server")


@pytest.fixture(scope="session")
def cli() -> Callable[[list[str]], CliOutcome]:
    """The in-process CLI runner (session-scoped, so hypothesis tests may use it)."""
    return run_cli
