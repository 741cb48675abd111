"""User mistakes that still escape the "exit 2, one line, no traceback" rule (found by the
property tests of ``test_cli_properties.py``, pinned here one by one), and the cases next to
them that do work.

Each xfail names the code to fix; when it is fixed the test passes and strict xfail makes
the suite say so.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

Cli = Callable[[list[str]], Any]
SIM = ["--backend", "simulated"]


def _ablate(cli: Cli, config: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.toml")
        path.write_text(config, encoding="utf-8")
        return cli(["-q", "ablate", str(path), "--output", str(Path(tmp, "out")), "--no-report"])


def _config(topology: str = '"single"', split: str = "") -> str:
    return (
        '[endpoint]\nbackend = "simulated"\n'
        f"[grid]\ntopologies = [{topology}]\nbudgets = [300]\n"
        '[[suites]]\nname = "arith"\nn = 2\n'
        f"[run]\ndurable = false\n{split}"
    )


def _one_clear_line(res: Any) -> None:
    assert "Traceback" not in res.err + res.out
    assert res.code == 2, f"exit {res.code}: {res.out}{res.err}"
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("error: "), res.err


# -- what works (kept next to the bugs, so a fix cannot break the neighbours) ------------------

@pytest.mark.parametrize("argv", [
    ["run", "x", *SIM, "-t", "best_of_n", "-p", "n=0"],
    ["run", "x", *SIM, "-t", "best_of_n", "-p", "n=abc"],
    ["run", "x", *SIM, "-t", "refine", "-p", "max_rounds=0"],
    ["run", "x", *SIM, "-t", "bogus"],
    ["run", "x", *SIM, "--budget", "-5"],
    ["run", "x", *SIM, "--budget", str(10**400)],
    ["tasks", "arith", "-p", "max_operand=1"],
], ids=lambda a: " ".join(a[3:]) if a[0] == "run" else " ".join(a))
def test_these_mistakes_get_one_clear_line(cli: Cli, argv: list[str]) -> None:
    _one_clear_line(cli(argv))


# -- role shares (--split, run.split) ----------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "[1]", "inf", "1e400", "-1", "nan"])
def test_a_bad_split_share_gets_one_clear_line(cli: Cli, value: str) -> None:
    _one_clear_line(cli(["run", "x", *SIM, "--split", f"solver={value}"]))


def test_an_infinite_split_in_a_config_gets_one_clear_line(cli: Cli) -> None:
    _one_clear_line(_ablate(cli, _config(split="split = { solver = inf }")))


# Shares are ratios, so a share near the float limit is as good as any other: it once made
# apportion overflow (its sum, or a share times the budget) into a traceback.

@pytest.mark.parametrize("shares", [["solver=1e308"], ["solver=1e308", "judge=1e308"]],
                         ids=["product", "sum"])
def test_split_shares_near_the_float_limit_work_in_run(cli: Cli, shares: list[str]) -> None:
    split = [token for share in shares for token in ("--split", share)]
    res = cli(["run", "x", *SIM, *split, "-t", "best_of_n"])
    assert "Traceback" not in res.err + res.out
    assert res.code == 0 and not res.err_lines, f"exit {res.code}: {res.out}{res.err}"
    assert "stop reason: done" in res.out


def test_split_shares_near_the_float_limit_work_in_ablate(cli: Cli) -> None:
    res = _ablate(cli, _config(split="split = { solver = 1e308, judge = 1e308 }"))
    assert "Traceback" not in res.err + res.out
    assert res.code == 0, f"exit {res.code}: {res.out}{res.err}"
    assert "2 run(s) done, 0 already done before, 0 failed" in res.out, res.out


# -- topology parameters -----------------------------------------------------------------------

# A count that is not an integer, a max_rounds out of range, a parameter the library sets
# itself: refused before the run (graphs.check_params and the builders), not inside it.
@pytest.mark.parametrize("param,names", [
    ("n=2.5", "best_of_n: n must be an integer, got 2.5"),
    ("max_rounds=-1", "best_of_n needs 1 <= max_rounds <= 64, got -1"),
    ("checkpointer=1", "best_of_n: unknown parameter 'checkpointer': use one of n, select"),
])
def test_a_bad_topology_parameter_gets_one_clear_line_from_run(cli: Cli, param: str,
                                                               names: str) -> None:
    res = cli(["run", "x", *SIM, "-t", "best_of_n", "-p", param])
    _one_clear_line(res)
    assert names in res.err, res.err


@pytest.mark.parametrize("topology,names", [
    ('{ name = "best_of_n", n = 2.5 }', "best_of_n: n must be an integer, got 2.5"),
    ('{ name = "single", checkpointer = 1 }', "single: unknown parameter 'checkpointer'"),
    ('{ name = "refine", max_rounds = 2.5 }', "refine: max_rounds must be an integer, got 2.5"),
])
def test_a_bad_topology_parameter_gets_one_clear_line_from_ablate(cli: Cli, topology: str,
                                                                  names: str) -> None:
    res = _ablate(cli, _config(topology=topology))
    _one_clear_line(res)
    assert names in res.err and "grid.topologies[0]" in res.err, res.err


@pytest.mark.parametrize("topology,param", [("refine", "judge_with=verifier"),
                                            ("best_of_n", "select=verifier")])
def test_verifier_judging_without_a_checker_gets_one_clear_line(cli: Cli, topology: str,
                                                                param: str) -> None:
    _one_clear_line(cli(["run", "x", *SIM, "-t", topology, "-p", param]))


# -- task suite parameters ---------------------------------------------------------------------

class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no handler in the CLI swallows it."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float], None]]:
    """Interrupt this (main) thread after some seconds, so a hang fails instead of hanging."""
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise _Hang("still running when the alarm went off")

    previous = signal.signal(signal.SIGALRM, on_alarm)

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    try:
        yield arm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_huge_max_operand_answers_promptly(cli: Cli, alarm: Callable[[float], None]) -> None:
    # It once hung: every step of a chain scanned range(2, max_operand + 1) for divisors.
    alarm(3.0)
    res = cli(["tasks", "arith", "-n", "1", "-p", "max_operand=1000000000000"])
    _one_clear_line(res)
    assert "max_operand must be an integer from 2 to 1000000" in res.err, res.err


def test_the_largest_max_operand_answers_promptly(cli: Cli,
                                                  alarm: Callable[[float], None]) -> None:
    alarm(3.0)
    res = cli(["tasks", "arith", "-n", "3", "-p", "max_operand=1000000", "-p", "ops='+*/'"])
    assert res.code == 0 and not res.err_lines, res.err


# -- usage errors ------------------------------------------------------------------------------

# Click's usage errors once took three lines ("Usage: ...", "Try ...", "Error: ...").
@pytest.mark.parametrize("argv", [["run", "x", "--budget", "abc"], ["run"], ["bogus"],
                                  ["tasks", "--bogus"]])
def test_a_usage_error_is_one_line(cli: Cli, argv: list[str]) -> None:
    res = cli(argv)
    _one_clear_line(res)
    assert res.err_lines[0].endswith("--help')"), res.err


def test_a_config_that_cannot_run_leaves_no_output_folder(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_config(topology='{ name = "best_of_n", n = 2.5 }'), encoding="utf-8")
    res = cli(["-q", "ablate", str(path), "--output", str(tmp_path / "out"), "--no-report"])
    _one_clear_line(res)
    assert not (tmp_path / "out").exists()


def test_a_budget_beyond_the_supported_range_in_a_config_gets_one_clear_line(cli: Cli) -> None:
    res = _ablate(cli, _config().replace("budgets = [300]", f"budgets = [{10**13}]"))
    _one_clear_line(res)
    assert "grid.budgets[0]" in res.err and "not supported" in res.err, res.err
