"""``stratagem view`` at the command line: a bad folder is one line and exit code 2."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stratagem.budgets import SCHEMA_VERSION
from stratagem.cli import main


def test_a_folder_that_is_not_an_output_folder_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["view", str(tmp_path), "--port", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path} is not an ablation output folder (no results.sqlite "
                   "and ledger.sqlite): pass the folder `stratagem ablate` wrote"]


def test_a_ledger_from_a_newer_stratagem_exits_2(tmp_path: Path, view_folder: Path) -> None:
    newer = tmp_path / "newer"
    shutil.copytree(view_folder, newer)
    with sqlite3.connect(newer / "ledger.sqlite") as conn:
        conn.execute("UPDATE stratagem_meta SET value = '99' WHERE key = 'schema_version'")
    done = subprocess.run([str(Path(sys.executable).parent / "stratagem"), "view", str(newer),
                           "--port", "0"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {newer / 'ledger.sqlite'} has ledger schema version 99, but this stratagem "
        f"reads up to version {SCHEMA_VERSION}: upgrade stratagem to view it"]
