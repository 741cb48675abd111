"""structlog configuration: JSON or console output, context from contextvars, secrets redacted.

Bind run-scoped fields once with :func:`bind_run` (or ``structlog.contextvars``); every event
logged in that context, in any thread or LangGraph branch, carries them. Redaction runs as the
last processor before rendering, so no renderer ever sees a secret. Standard-library records
from ``openai``, ``httpx2`` and ``langgraph`` go through the same pipeline.

Example:
    >>> from stratagem.logging import configure_logging, get_logger
    >>> configure_logging(fmt="json")
    >>> get_logger().info("llm.call", role="solver", prompt_tokens=12)  # doctest: +SKIP
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from stratagem._redact import redact_value, register_secret
from stratagem.errors import ConfigError

__all__ = [
    "LogFormat",
    "bind_run",
    "configure_logging",
    "get_logger",
    "redact_processor",
    "register_secret",
]

LogFormat = Literal["json", "console"]

_LEVELS = {
    "debug": _stdlib_logging.DEBUG,
    "info": _stdlib_logging.INFO,
    "warning": _stdlib_logging.WARNING,
    "error": _stdlib_logging.ERROR,
}


def redact_processor(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """structlog processor that replaces secrets in every field with ``[REDACTED]``."""
    return {key: redact_value(value, key) for key, value in event_dict.items()}


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    fmt: LogFormat = "console",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    cache_loggers: bool = True,
) -> None:
    """Configure structlog (and the stdlib loggers of our dependencies) for stratagem.

    Args:
        fmt: ``"json"`` for one JSON object per line, ``"console"`` for humans.
        level: Minimum level: ``debug``, ``info``, ``warning`` or ``error``.
        stream: Where to write; standard error by default, so results on stdout stay clean.
        cache_loggers: Cache bound loggers on first use (turn off in tests that reconfigure).

    Raises:
        ConfigError: If ``fmt`` or ``level`` is not one of the accepted values.
    """
    if fmt not in ("json", "console"):
        raise ConfigError(f"unknown log format {fmt!r}: use 'json' or 'console'")
    if level.lower() not in _LEVELS:
        raise ConfigError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    out = stream if stream is not None else sys.stderr
    numeric = _LEVELS[level.lower()]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    tail: list[Processor] = [structlog.processors.dict_tracebacks] if fmt == "json" else []
    structlog.configure(
        processors=[*_shared_processors(), *tail, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache_loggers,
    )
    # Third-party stdlib logging goes through the same processors and renderer.
    handler = _stdlib_logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_shared_processors(), structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_processor,
                renderer,
            ],
        )
    )
    for name in ("openai", "httpx", "httpx2", "langgraph"):
        lib_logger = _stdlib_logging.getLogger(name)
        lib_logger.handlers = [handler]
        lib_logger.propagate = False
        # The SDK logs request options at DEBUG; keep it at WARNING unless debugging.
        lib_logger.setLevel(max(numeric, _stdlib_logging.WARNING))


def get_logger(name: str = "stratagem") -> Any:
    """Return a structlog logger (bound to ``logger=name``)."""
    return structlog.get_logger(name)


@contextmanager
def bind_run(**fields: Any) -> Iterator[MutableMapping[str, Any]]:
    """Bind ``fields`` (run_id, topology, role, node, ...) to every event logged inside."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield structlog.contextvars.get_contextvars()
