"""Strict, early validation: every check runs before any file or folder is created.

A refused config names the field path and the fix on one line, exits 2, creates no output
folder, and leaves an existing one byte-identical (no new ``ledger.sqlite`` beside a bad
``results.sqlite``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Cli = Callable[..., Any]

GOOD = """\
name = "strict"
output = "{output}"

[endpoint]
backend = "simulated"

[grid]
topologies = ["single"]
budgets = [400]

[[suites]]
name = "arith"
n = 2
"""


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _config(tmp_path: Path, out: Path, text: str = GOOD, **replace: str) -> Path:
    body = text.format(output=out.as_posix())
    for old, new in replace.items():
        assert old in body, old
        body = body.replace(old, new)
    path = tmp_path / "strict.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(("edit", "says"), [
    ({"[[suites]]": "[run]\nsplit = {solver = -1.0}\n\n[[suites]]"},
     "run.split.solver: is -1.0: role shares are non-negative weights"),
    ({"[[suites]]": "[run]\nsplit = {solver = 0.0}\n\n[[suites]]"},
     "run.split: needs at least one positive share"),
    ({'backend = "simulated"': 'backend = "vllm"\nbase_url = "http://127.0.0.1:9/v1"'},
     "endpoint: model: a model name is required for backend 'vllm'"),
    ({"budgets = [400]": 'budgets = ["600"]'},
     "grid.budgets[0]: Input should be a valid integer, got the string '600': write it "
     "without quotes"),
    ({"n = 2": 'n = "2"'}, "suites[0].n: Input should be a valid integer"),
    ({"[[suites]]": '[run]\ndurable = "yes"\n\n[[suites]]'}, "run.durable"),
    ({"[[suites]]": '[run]\ntemperature = "0.5"\n\n[[suites]]'}, "run.temperature"),
])
def test_a_refused_config_names_the_field_and_creates_no_folder(
        cli: Cli, tmp_path: Path, edit: dict[str, str], says: str) -> None:
    out = tmp_path / "out"
    body = GOOD.format(output=out.as_posix())
    for old, new in edit.items():
        body = body.replace(old, new)
    config = tmp_path / "bad.toml"
    config.write_text(body, encoding="utf-8")

    result = cli("ablate", config, "--no-report")

    assert result.code == 2, result.err
    assert len(result.err_lines) == 1 and says in result.err, result.err
    assert not out.exists()


def test_a_float_field_still_takes_an_integer(cli: Cli, tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "out",
                     **{"[[suites]]": "[run]\ntemperature = 1\nsplit = {solver = 1}\n\n[[suites]]"})
    assert cli("ablate", config, "--no-report").code == 0


def test_openai_without_a_key_creates_no_folder(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("STRATAGEM_API_KEY", raising=False)
    out = tmp_path / "out"
    config = _config(tmp_path, out, **{'backend = "simulated"':
                                       'backend = "openai"\nmodel = "gpt-4o-mini"'})
    result = cli("ablate", config, "--no-report")
    assert result.code == 2 and "endpoint: backend 'openai' needs an API key" in result.err
    assert not out.exists()


@pytest.mark.parametrize("content", [b"this is not SQLite" * 64, b""])
def test_a_results_file_that_is_not_results_is_refused_before_a_ledger_is_made(
        cli: Cli, tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(content)
    before = _snapshot(out)

    result = cli("ablate", _config(tmp_path, out), "--no-report")

    if content:
        assert result.code == 2, result.err
        assert "results.sqlite" in result.err and "new `output` folder" in result.err
        assert _snapshot(out) == before  # no ledger.sqlite, no -wal, nothing rewritten
    else:
        # An empty file is what SQLite makes of a new database: it is taken as one.
        assert result.code == 0, result.err


@pytest.mark.parametrize("name", ["ledger.sqlite", "checkpoints.sqlite"])
def test_another_file_that_is_not_its_kind_is_refused_before_anything_is_written(
        cli: Cli, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    assert cli("ablate", _config(tmp_path, out), "--no-report").code == 0
    (out / name).write_bytes(b"garbage" * 300)
    for stale in out.glob(f"{name}-*"):
        stale.unlink()
    before = _snapshot(out)

    result = cli("ablate", _config(tmp_path, out), "--no-report")

    assert result.code == 2 and name in result.err, result.err
    assert _snapshot(out) == before


def test_a_config_with_other_settings_leaves_the_folder_byte_identical(
        cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("ablate", _config(tmp_path, out), "--no-report").code == 0
    before = _snapshot(out)

    other = _config(tmp_path, out, **{"[[suites]]": "[run]\ntemperature = 0.1\n\n[[suites]]"})
    result = cli("ablate", other, "--no-report")

    assert result.code == 2 and "run.temperature was 0.8, is 0.1" in result.err
    assert _snapshot(out) == before


def test_a_directory_given_for_the_config_is_named_as_such(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "configs"
    empty.mkdir()
    result = cli("ablate", empty)
    assert result.code == 2
    assert f"{empty} is a directory; pass the TOML config file, e.g. {empty}/ablation.toml" \
        in result.err

    out = tmp_path / "out"  # an output folder holds its config.toml: that is the example
    assert cli("ablate", _config(tmp_path, out), "--no-report").code == 0
    result = cli("ablate", out)
    assert result.code == 2 and f"e.g. {out}/config.toml" in result.err


def test_an_empty_task_is_refused(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    for task in ("", "   "):
        result = cli("run", task, "--backend", "simulated", "--ledger", ledger)
        assert result.code == 2 and "the task is empty" in result.err
    assert not ledger.exists()


def test_a_refused_endpoint_creates_no_ledger_file(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    result = cli("run", "x", "--backend", "vllm", "--ledger", ledger)
    assert result.code == 2 and "model name is required" in result.err
    assert not ledger.exists()
