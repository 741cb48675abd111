"""The ``stratagem`` command in-process: version and help, exit codes (0 success, 1 a run
failure, 2 the user's mistake in one line without a traceback), ``run`` and ``tasks``.

Commands that read an ablation folder are in ``test_folders.py``; real subprocesses in
``test_subprocess.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratagem import __version__
from stratagem.errors import RunError
from stratagem.tasks import get_suite

Cli = Callable[..., Any]

COMMANDS = ["run", "ablate", "audit", "report", "tasks", "serve-local"]


def test_version(cli: Cli) -> None:
    result = cli("--version")

    assert result.code == 0
    assert result.out.strip() == f"stratagem {__version__}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(cli: Cli, command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")

    assert result.code == 0
    assert "Usage" in result.out
    assert result.err == ""


def test_the_top_level_help_lists_every_command(cli: Cli) -> None:
    out = cli("--help").out

    for command in COMMANDS:
        assert command in out


# -- the user's mistakes: exit 2, one line, no traceback ------------------------------------------

TOML_SYNTAX_ERROR = 'name = "x"\n[grid\nbudgets = [1]\n'
INVALID_FIELD = ('[grid]\ntopologies = ["single"]\nbudgets = [400, "many"]\n'
                 '[[suites]]\nname = "arith"\n')
BAD_TOPOLOGY_PARAM = ('[endpoint]\nbackend = "simulated"\n[grid]\n'
                      'topologies = [{ name = "best_of_n", m = 4 }]\nbudgets = [400]\n'
                      '[[suites]]\nname = "arith"\nn = 1\n')

USER_ERRORS: list[tuple[str, list[str], str]] = [
    # (id, arguments; {tmp} is a fresh folder, {cfg} a config file written from FILES, the
    # text the one line must contain)
    ("unknown topology", ["run", "x", "-t", "nope", "--backend", "simulated"],
     "unknown topology 'nope'"),
    ("negative budget", ["run", "x", "--budget", "-5", "--backend", "simulated"],
     "--budget must be a number of tokens from 1 to"),
    ("zero budget", ["run", "x", "--budget", "0", "--backend", "simulated"],
     "--budget must be a number of tokens from 1 to"),
    ("missing model", ["run", "x", "--backend", "openai"], "a model name is required"),
    ("unknown backend", ["run", "x", "--backend", "azure"], "bad endpoint option"),
    ("bad base url", ["run", "x", "--backend", "vllm", "--model", "m", "--base-url", "ftp://h"],
     "http:// or https://"),
    ("bad param", ["run", "x", "-p", "n4", "--backend", "simulated"], "KEY=VALUE"),
    ("bad topology param", ["run", "x", "-t", "best_of_n", "-p", "m=4", "--backend", "simulated"],
     "'m'"),
    ("out of range topology param",
     ["run", "x", "-t", "best_of_n", "-p", "n=0", "--backend", "simulated"], "n"),
    ("bad reallocation", ["run", "x", "--reallocation", "maybe", "--backend", "simulated"],
     "--reallocation"),
    ("negative split", ["run", "x", "--split", "solver=-1", "--backend", "simulated"],
     "non-negative"),
    ("ledger is a folder", ["run", "x", "--backend", "simulated", "--ledger", "{tmp}"],
     "directory"),
    ("missing config", ["ablate", "{tmp}/missing.toml"], "missing.toml does not exist"),
    ("toml syntax error", ["ablate", "{cfg:syntax}"], "is not valid TOML"),
    ("invalid config field", ["ablate", "{cfg:field}"], "grid.budgets[1]"),
    ("bad topology param in config", ["ablate", "{cfg:topology}"], "'m'"),
    ("unknown executor", ["ablate", "{cfg:field}", "--executor", "nope"], "unknown executor"),
    ("unknown audit field", ["audit", "{tmp}", "--by", "bogus"], "'bogus'"),
    ("unknown audit filter", ["audit", "{tmp}", "--where", "bogus=1"], "'bogus'"),
    ("audit filter without =", ["audit", "{tmp}", "--where", "role"], "KEY=VALUE"),
    ("bad audit format", ["audit", "{tmp}", "--format", "xml"], "--format must be"),
    ("audit of a folder without a ledger", ["audit", "{tmp}"], "has no ledger.sqlite"),
    ("audit of a missing path", ["audit", "{tmp}/nope.sqlite"], "does not exist"),
    ("audit of a file that is not a ledger", ["audit", "{cfg:syntax}"], "not a stratagem ledger"),
    ("report of a folder that is not an output", ["report", "{tmp}"],
     "not an ablation output folder"),
    ("unknown suite", ["tasks", "nosuch"], "unknown task suite 'nosuch'"),
    ("unknown suite parameter", ["tasks", "arith", "-p", "deph=3"], "'deph'"),
    ("bad suite parameter value", ["tasks", "arith", "-p", "depth=abc"], "depth"),
    ("negative task count", ["tasks", "words", "-n", "-2"], "-2"),
    ("too many examples", ["tasks", "arith", "--few-shot", "17"], "few_shot must be"),
    ("examples the suite cannot give", ["tasks", "words", "-n", "2", "-p", "length=any",
                                        "-p", "letters=ab", "--few-shot", "1"],
     "can give only 0 of the 1"),
    ("unknown log format", ["--log-format", "xml", "tasks"], "unknown log format"),
]

FILES = {"syntax": TOML_SYNTAX_ERROR, "field": INVALID_FIELD, "topology": BAD_TOPOLOGY_PARAM}


def _arguments(args: list[str], tmp: Path) -> list[str]:
    out = []
    for arg in args:
        if arg.startswith("{cfg:"):
            kind = arg[5:-1]
            path = tmp / f"{kind}.toml"
            path.write_text(FILES[kind], encoding="utf-8")
            out.append(str(path))
        else:
            out.append(arg.replace("{tmp}", str(tmp)))
    return out


@pytest.mark.parametrize(("args", "says"), [(a, s) for _, a, s in USER_ERRORS],
                         ids=[i for i, _, _ in USER_ERRORS])
def test_a_users_mistake_exits_2_with_one_line(
    cli: Cli, tmp_path: Path, args: list[str], says: str
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()

    result = cli(*_arguments(args, folder))

    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    assert says in result.err_lines[0]
    assert "Traceback" not in result.out + result.err


def test_a_split_that_is_not_a_number_exits_2_with_one_line(cli: Cli) -> None:
    result = cli("run", "x", "--split", "solver=most", "--backend", "simulated")

    assert result.code == 2
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("error: ")
    assert "--split" in result.err_lines[0]


def test_a_usage_error_exits_2_without_a_traceback(cli: Cli) -> None:
    for args in (["nosuchcommand"], ["run"], ["run", "x", "--budget", "many"]):
        result = cli(*args)

        assert result.code == 2, args
        assert "Traceback" not in result.out + result.err


# -- failures that are not the user's ----------------------------------------------------------


def test_a_run_failure_exits_1_with_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RunError("the disk is full")

    monkeypatch.setattr("stratagem.cli._report.report_ablation", fail)

    result = cli("report", tmp_path)

    assert result.code == 1
    assert result.err_lines == ["run failed: the disk is full"]


def test_ctrl_c_exits_130(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("stratagem.cli._report.report_ablation", interrupt)

    result = cli("report", tmp_path)

    assert result.code == 130
    assert result.err_lines == ["interrupted"]


# -- run -----------------------------------------------------------------------------------------


def test_run_on_the_simulated_backend_prints_the_answer_and_the_audit(cli: Cli) -> None:
    result = cli("run", "What is 6 times 7?", "--backend", "simulated", "-t", "best_of_n",
                 "-p", "n=3", "-p", "select=judge", "--budget", "3000")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("answer: ")
    assert lines[0] != "answer: (none)"
    assert lines[1] == "stop reason: done"
    assert "Token audit by role (SIMULATED)" in result.out
    assert "billed " in result.out
    assert "Traceback" not in result.err


def test_run_records_its_calls_in_the_ledger_it_is_given(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "calls.sqlite"
    for _ in range(2):
        assert cli("run", "What is 2 + 2?", "--backend", "simulated", "-t", "refine",
                   "--reallocation", "judge_feedback", "--ledger", ledger).code == 0

    result = cli("audit", ledger, "--by", "run", "--format", "json")

    groups = json.loads(result.out)["groups"]
    assert len(groups) == 2
    assert all(g["calls"] >= 2 for g in groups)


def test_run_quiet_prints_only_the_answer(cli: Cli) -> None:
    result = cli("-q", "run", "What is 2 + 2?", "--backend", "simulated")

    assert result.code == 0
    assert [line.split(":")[0] for line in result.out.splitlines()] == ["answer", "stop reason"]


# -- tasks --------------------------------------------------------------------------------------


def test_tasks_lists_every_suite(cli: Cli) -> None:
    result = cli("tasks")

    assert result.code == 0
    for suite in ("arith", "connectivity", "words", "humaneval", "jsonl"):
        assert suite in result.out


def test_tasks_previews_a_suite_with_parameters(cli: Cli) -> None:
    result = cli("tasks", "words", "-n", "2", "-p", "length=any")

    assert result.code == 0
    assert "words: 2 sample task(s), seed 0" in result.out
    assert "words/0/0" in result.out
    assert "words/0/1" in result.out
    assert "words/0/2" not in result.out


def test_tasks_shows_the_examples_an_ablation_would_give(cli: Cli) -> None:
    result = cli("tasks", "words", "-n", "2", "-p", "length=any", "--few-shot", "2")

    assert result.code == 0
    assert "words: 2 worked example(s) shown before each task" in result.out
    suite = get_suite("words", length="any")
    tasks = suite.generate(2)
    for _, reply in suite.demonstrations(2, exclude={t.question for t in tasks}):
        assert reply in result.out


def test_tasks_preview_is_seeded(cli: Cli) -> None:
    first = cli("tasks", "arith", "-n", "3", "--seed", "5").out
    again = cli("tasks", "arith", "-n", "3", "--seed", "5").out
    other = cli("tasks", "arith", "-n", "3", "--seed", "6").out

    assert first == again
    assert first != other
