"""Test-wide guards: no network beyond loopback, clean structlog context per test, and no
logging configuration leaking from one test into the next (any test may run ``main()``)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

pytest_plugins = ["stratagem.testing.pytest_plugin"]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like
        return True
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise ConnectionRefusedError(
                f"tests may only connect to loopback addresses, not {address!r}"
            )
        return real(self, address)

    return connect


@pytest.fixture(autouse=True, scope="session")
def _private_tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Seed tiktoken into a per-session folder, not the machine's shared cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real network calls are impossible in tests: only 127.0.0.0/8 and ::1 are reachable."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture(autouse=True)
def _clean_log_context() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


_LIBRARY_LOGGERS = ("openai", "httpx", "httpx2", "langgraph")


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's ``main()`` configures logging with cached loggers; in a test it must not (a
    logger cached on a captured stream loses every later event, e.g. ``llm.call``), and
    structlog's and the libraries' configuration is restored afterwards."""
    from stratagem.logging import configure_logging

    saved = structlog.get_config()
    libraries = {name: logging.getLogger(name) for name in _LIBRARY_LOGGERS}
    before = {name: (lg.handlers[:], lg.propagate, lg.level) for name, lg in libraries.items()}

    def uncached(fmt: Any = "console", level: str = "info", stream: Any = None,
                 **_: Any) -> None:
        configure_logging(fmt, level, stream, cache_loggers=False)

    monkeypatch.setattr("stratagem.cli._main.configure_logging", uncached)  # the CLI's seam
    yield
    structlog.configure(**saved)
    for name, (handlers, propagate, level) in before.items():
        libraries[name].handlers = handlers
        libraries[name].propagate = propagate
        libraries[name].setLevel(level)
