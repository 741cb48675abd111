"""The installed ``stratagem`` command as a real process: the user's mistakes and a dead
endpoint end without a traceback, and Ctrl-C during ``ablate`` stops cleanly and resumes.

Each process pays for importing stratagem (a few seconds), so the error cases run
concurrently in one module fixture. Only 127.0.0.1 is contacted; proxies are switched off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratagem import __version__
from stratagem.ablation import ResultsStore, load_config, run_ablation

DEAD_ENDPOINT = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on loopback

INTERRUPTIBLE = """\
name = "interruptible"
output = "{output}"

[endpoint]
backend = "simulated"

[grid]
topologies = ["single", "plan_solve", {{ name = "best_of_n", n = 2, select = "judge" }}]
budgets = [400, 1600]
seeds = [0, 1]
policies = ["uniform", "difficulty_adaptive"]

[[suites]]
name = "arith"
n = 4
"""
PLANNED = 3 * 2 * 2 * 2 * 4


def stratagem_command() -> list[str]:
    script = Path(sys.executable).with_name("stratagem")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from stratagem.cli import main; sys.exit(main())"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("STRATAGEM_")
           and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(NO_PROXY="*", no_proxy="*", COLUMNS="250")
    return env


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*stratagem_command(), *args], cwd=cwd, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> Finished:
    out, err = process.communicate(timeout=timeout)
    return Finished(process.returncode, out, err)


CASES: dict[str, list[str]] = {
    "version": ["--version"],
    "unknown topology": ["run", "x", "-t", "nope", "--backend", "simulated"],
    "toml syntax error": ["ablate", "broken.toml"],
    "dead endpoint": ["run", "What is 2 + 2?", "--backend", "vllm", "--base-url",
                      DEAD_ENDPOINT, "--model", "m"],
}
# The other mistakes are checked in-process (test_cli.py): the same main(), no process start.
USER_ERRORS = ["unknown topology", "toml syntax error"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    cwd = tmp_path_factory.mktemp("subprocess")
    (cwd / "broken.toml").write_text('name = "x"\n[grid\n', encoding="utf-8")
    processes = {name: start(args, cwd) for name, args in CASES.items()}
    return {name: finish(p) for name, p in processes.items()}


def test_the_version_of_the_installed_command(finished: dict[str, Finished]) -> None:
    result = finished["version"]

    assert result.code == 0
    assert result.out.strip() == f"stratagem {__version__}"


@pytest.mark.parametrize("case", USER_ERRORS)
def test_a_users_mistake_is_one_line_and_exit_2(finished: dict[str, Finished],
                                                case: str) -> None:
    result = finished[case]

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    assert "Traceback" not in result.out + result.err
    assert result.out == ""


def test_a_dead_endpoint_fails_without_a_traceback(finished: dict[str, Finished]) -> None:
    result = finished["dead endpoint"]

    assert "Traceback" not in result.out + result.err
    assert "connection failed" in result.out + result.err
    assert "answer: (none)" in result.out


def test_a_dead_endpoint_is_a_run_failure(finished: dict[str, Finished]) -> None:
    result = finished["dead endpoint"]

    assert result.code == 1
    assert result.err_lines[-1].startswith("run failed: ")


# -- Ctrl-C during an ablation ------------------------------------------------------------------


@dataclass(frozen=True)
class Interrupted:
    result: Finished
    rows_at_signal: int
    config: Path


def _rows(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            count = int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        conn.close()
    except sqlite3.Error:  # not created yet, or its tables not yet
        return 0
    return count


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    cwd = tmp_path_factory.mktemp("sigint")
    config = cwd / "interruptible.toml"
    config.write_text(INTERRUPTIBLE.format(output=(cwd / "out").as_posix()), encoding="utf-8")
    process = start(["-q", "ablate", config.name], cwd)
    deadline = time.monotonic() + 60
    rows = 0
    while process.poll() is None and time.monotonic() < deadline:
        rows = _rows(cwd / "out" / "results.sqlite")
        if rows:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    return Interrupted(finish(process), rows, config)


def test_ctrl_c_stops_an_ablation_cleanly(interrupted: Interrupted) -> None:
    result = interrupted.result

    assert interrupted.rows_at_signal > 0
    assert "Traceback" not in result.out + result.err
    assert "interrupted after" in result.out
    assert "rerun the same command to resume" in result.out
    with ResultsStore(interrupted.config.parent / "out" / "results.sqlite") as rs:
        assert 0 < len(rs.done()) < PLANNED


def test_an_ablation_stopped_by_ctrl_c_resumes_where_it_stopped(
    interrupted: Interrupted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(interrupted.config.parent)
    config = load_config(interrupted.config.name)
    with ResultsStore(config.output / "results.sqlite") as rs:
        done = len(rs.done())

    outcome = asyncio.run(run_ablation(config))

    assert (outcome.skipped, outcome.ran, outcome.planned) == (done, PLANNED - done, PLANNED)
    with ResultsStore(config.output / "results.sqlite") as rs:
        assert len(rs.done()) == PLANNED


def test_ctrl_c_exits_130(interrupted: Interrupted) -> None:
    assert interrupted.result.code == 130
