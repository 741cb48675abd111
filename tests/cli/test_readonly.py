"""``stratagem audit`` and ``report`` on a folder the user may only read.

The folder, its ledger and its results are made read-only with ``chmod``. The tests run as
root, which ignores permissions, so each test also checks that the read-only code path was
taken: no ``-wal``/``-shm`` or other new file appears, and the files are byte-identical.
One test mounts the folder read-only for real (a private mount namespace of one child
process, via ``unshare``); it is skipped where that is not allowed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Cli = Callable[..., Any]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _chmod_tree(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~write)


@pytest.fixture
def readonly_output(sim_output: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the simulated output folder without its report, made read-only."""
    folder = tmp_path / "ro"
    shutil.copytree(sim_output, folder, ignore=shutil.ignore_patterns("report"))
    assert not list(folder.glob("*-wal")) and not list(folder.glob("*-shm"))
    _chmod_tree(folder, writable=False)
    yield folder
    _chmod_tree(folder, writable=True)


def test_audit_reads_a_read_only_folder_and_changes_nothing(
        cli: Cli, readonly_output: Path) -> None:
    before = _snapshot(readonly_output)

    table = cli("audit", readonly_output)
    as_json = cli("audit", readonly_output / "ledger.sqlite", "--by", "run", "--format", "json")

    assert table.code == 0, table.err
    assert "solver" in table.out and "not a stratagem ledger" not in table.err
    assert as_json.code == 0, as_json.err
    assert _snapshot(readonly_output) == before  # no -wal, no -shm, nothing rewritten


def test_report_on_a_read_only_folder_writes_only_where_it_is_told(
        cli: Cli, readonly_output: Path, tmp_path: Path) -> None:
    before = _snapshot(readonly_output)

    result = cli("report", readonly_output, "--boot", "20", "--out", tmp_path / "elsewhere")

    assert result.code == 0, result.err
    assert (tmp_path / "elsewhere" / "report.html").is_file()
    assert _snapshot(readonly_output) == before


def test_the_stores_opened_read_only_refuse_writes(readonly_output: Path) -> None:
    from stratagem.ablation import ResultsStore
    from stratagem.budgets import LedgerEntry, LedgerStore, TokenLedger
    from stratagem.errors import LedgerError

    ledger = TokenLedger.open(readonly_output / "ledger.sqlite", readonly=True)
    assert len(ledger) > 0
    with pytest.raises(LedgerError, match="read-only"):
        ledger.append(LedgerEntry(role="solver", model="m"))
    with LedgerStore(readonly_output / "ledger.sqlite", readonly=True) as store:
        assert len(store) == len(ledger)
        # A read-write open (and even SQLite's mode=ro) would have made these by now.
        assert not list(readonly_output.glob("*-wal")) and not list(readonly_output.glob("*-shm"))
        with pytest.raises(LedgerError, match="read-only"):
            store.append(LedgerEntry(role="solver", model="m"))
    with ResultsStore(readonly_output / "results.sqlite", readonly=True) as rs:
        record = rs.records()[0]
        with pytest.raises(LedgerError, match="read-only"):
            rs.add(record.model_copy(update={"run_id": "new"}))
        with pytest.raises(LedgerError, match="read-only"):
            rs.record_settings({"run": "{}"})
    assert not list(readonly_output.glob("*-wal")) and not list(readonly_output.glob("*-shm"))


def _can_mount_privately() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _can_mount_privately(),
                    reason="needs unshare -m (Linux, CAP_SYS_ADMIN) for a read-only mount")
def test_audit_and_report_on_a_read_only_file_system(sim_output: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    shutil.copytree(sim_output, folder, ignore=shutil.ignore_patterns("report"))
    out = tmp_path / "report-out"
    code = ("import sys\nfrom stratagem.cli import main\n"
            "sys.argv[0] = 'stratagem'\nmain(sys.argv[1:])\n")
    # The bind mount exists only in the child's own mount namespace: nothing to clean up.
    script = (f'mount --bind "{folder}" "{folder}" && '
              f'mount -o remount,ro,bind "{folder}" "{folder}" && '
              f'! touch "{folder}/probe" 2>/dev/null && '
              f'"{sys.executable}" -c "$CODE" audit "{folder}" && '
              f'"{sys.executable}" -c "$CODE" report "{folder}" --boot 0 --out "{out}" && '
              f'"{sys.executable}" -c "$CODE" report "{folder}" --boot 0; echo "rc=$?"')
    env = {**os.environ, "CODE": code, "COLUMNS": "200"}
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert "solver" in done.stdout, done.stderr[-2000:]
    assert (out / "report.html").is_file(), done.stderr[-2000:]
    # Without --out the report cannot go in the folder: one line says so and how to fix it.
    assert "rc=2" in done.stdout, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Read-only file system" in done.stderr and "pass --out DIR" in done.stderr
