"""Running the ``stratagem`` command in-process, and a simulated ablation folder to point it at.

``main()`` configures logging for each invocation; here it does so without caching loggers,
and the configuration of structlog and of the libraries' stdlib loggers is restored after
every test, so a CLI test never leaves a logger bound to a captured stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from stratagem.ablation import load_config, run_ablation
from stratagem.cli import main
from stratagem.logging import configure_logging

_LIBRARY_LOGGERS = ("openai", "httpx", "httpx2", "langgraph")


@dataclass(frozen=True)
class Result:
    """What one ``stratagem ...`` invocation did."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
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


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``cli("tasks", "words")`` runs ``stratagem tasks words`` and returns its exit code and
    output (a ``main()`` that returns is exit code 0, as for the console script).

    The console is made wide, so paths and table rows are not wrapped in the output.
    """
    monkeypatch.setenv("COLUMNS", "250")

    def invoke(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


SIM_CONFIG = """\
name = "cli-sim"
output = "{output}"

[endpoint]
backend = "simulated"

[grid]
topologies = ["single", "plan_solve", {{ name = "best_of_n", n = 2, select = "judge" }}]
budgets = [400, 1600]

[[suites]]
name = "arith"
n = 3

[run]
durable = false
"""


def _write_sim_config(path: Path, output: Path) -> Path:
    path.write_text(SIM_CONFIG.format(output=output.as_posix()), encoding="utf-8")
    return path


@pytest.fixture
def sim_config_file() -> Callable[[Path, Path], Path]:
    """``sim_config_file(path, output)`` writes a tiny simulated ablation config (18 runs,
    including planner budget transfers) that writes to ``output``, and returns ``path``."""
    return _write_sim_config


@pytest.fixture(scope="session")
def sim_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulated ablation's output folder (treat as read-only)."""
    root = tmp_path_factory.mktemp("cli-sim")
    config = _write_sim_config(root / "sim.toml", root / "out")
    cfg = load_config(config)
    asyncio.run(run_ablation(cfg, config_text=config.read_text(encoding="utf-8")))
    return cfg.output
