"""Running the ``stratagem`` command in-process, and a simulated ablation folder to point it at.

(``main()``'s logging is kept from leaking between tests by ``tests/conftest.py``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratagem.ablation import load_config, run_ablation
from stratagem.cli import main


@dataclass(frozen=True)
class Result:
    """What one ``stratagem ...`` invocation did."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()




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
