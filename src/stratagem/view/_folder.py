"""An output folder opened read-only, with an index of its runs for paging and filtering.

Every file is opened through an SQLite URI with ``mode=ro``: the viewer never writes to the
folder, not even the schema bookkeeping that :class:`~stratagem.ablation.ResultsStore` and
:class:`~stratagem.budgets.LedgerStore` do on open. ``results.sqlite`` keeps each record as
JSON keyed by ``run_id``, which has no index to filter or sort by, and a read-only viewer may
not add one; so the runs' columns are copied once into an in-memory table with an index per
filter column and on the default order (:meth:`RunIndex.sync`; ``bench/viewer.py`` times it
on 100,000 runs), and every page is a ``LIMIT``/``OFFSET`` query on it. It copies only the
rows added since its last call (by ``rowid``), which is how the live mode follows an ablation
that is still writing to the folder.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratagem.ablation import RESULTS_SCHEMA_VERSION, RunRecord, records_frame
from stratagem.budgets import SCHEMA_VERSION, LedgerEntry, TokenLedger, Transfer
from stratagem.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FILTERS", "SORTS", "OutputFolder", "Page", "RunIndex", "connect_ro"]

# Column of the index -> its type and the record field it comes from.
_COLUMNS: dict[str, str] = {
    "run_id": "TEXT", "cell": "TEXT", "topology": "TEXT", "budget": "INTEGER",
    "allocated": "INTEGER", "policy": "TEXT", "seed": "INTEGER", "suite": "TEXT",
    "task_id": "TEXT", "correct": "INTEGER", "score": "REAL", "answer": "TEXT",
    "stop_reason": "TEXT", "tokens_total": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "waste_tokens": "INTEGER", "calls": "INTEGER",
    "transfers": "INTEGER", "cost_usd": "REAL", "wall_s": "REAL", "error": "TEXT",
    "simulated": "INTEGER", "finished_at": "TEXT",
}
FILTERS = ("topology", "budget", "policy", "suite", "correct")
"""Columns the runs table filters on (equality)."""
SORTS = ("finished_at", "topology", "budget", "policy", "suite", "seed", "task_id", "correct",
         "tokens_total", "waste_tokens", "calls", "transfers", "cost_usd", "wall_s")
"""Columns the runs table sorts by."""
_MAX_PAGE = 500


def connect_ro(path: Path) -> sqlite3.Connection:
    """Open an SQLite file read-only (``mode=ro``: a write raises, nothing is created).

    Raises:
        ConfigError: If the file cannot be opened as SQLite.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)
        conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"{path} cannot be read as SQLite ({exc}): is it an output "
                          "folder of `stratagem ablate`?") from exc
    return conn


def _meta(conn: sqlite3.Connection, table: str, path: Path, kind: str) -> dict[str, str]:
    try:
        return dict(conn.execute(f"SELECT key, value FROM {table}").fetchall())
    except sqlite3.Error as exc:
        raise ConfigError(f"{path} is not a {kind} file of stratagem (no {table} table)") \
            from exc


def _check_version(meta: Mapping[str, str], path: Path, kind: str, expected: str,
                   newest: int) -> None:
    if meta.get("kind") != expected:
        raise ConfigError(f"{path} is not a {kind} file of stratagem (kind="
                          f"{meta.get('kind')!r})")
    version = int(meta.get("schema_version", "0"))
    if version > newest:
        raise ConfigError(f"{path} has {kind} schema version {version}, but this stratagem "
                          f"reads up to version {newest}: upgrade stratagem to view it")


@dataclass(frozen=True)
class Page:
    """One page of the runs table.

    Attributes:
        total: Runs matching the filters.
        rows: The page's runs, as column -> value.
        offset: Where the page starts.
        limit: Its size.
    """

    total: int
    rows: list[dict[str, Any]]
    offset: int
    limit: int


class RunIndex:
    """The runs of ``results.sqlite`` in an indexed in-memory table (see the module doc)."""

    def __init__(self, results: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect("file:stratagem-view?mode=memory", uri=True,
                                   check_same_thread=False)
        self._db.execute("ATTACH DATABASE ? AS src", (f"{results.resolve().as_uri()}?mode=ro",))
        cols = ", ".join(f"{c} {t}" for c, t in _COLUMNS.items())
        self._db.execute(f"CREATE TABLE runs (rid INTEGER PRIMARY KEY, {cols})")
        self._indexed = False
        fields = ", ".join(f"json_extract(record, '$.{c}')" for c in _COLUMNS)
        self._copy = (f"INSERT INTO runs (rid, {', '.join(_COLUMNS)}) "
                      f"SELECT rowid, {fields} FROM src.runs WHERE rowid > ? ORDER BY rowid")
        self._last = 0

    def sync(self) -> int:
        """Copy the runs written since the last call; returns how many were new."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.execute(self._copy, (self._last,))
            self._db.execute("COMMIT")
            new = self._db.total_changes - before
            if not self._indexed:
                # After the first bulk copy, which is faster without indexes to keep up.
                # Filter columns and the default order only: a page in another order
                # (LIMIT) is a top-N pass over the matching rows, tens of milliseconds for
                # 100,000 (bench/viewer.py); an index per sort column would double the time
                # the viewer takes to start.
                for c in (*FILTERS, "finished_at"):
                    self._db.execute(f"CREATE INDEX runs_{c} ON runs ({c})")
                self._indexed = True
            if new:
                self._last = int(self._db.execute("SELECT MAX(rid) FROM runs").fetchone()[0])
            return new

    def count(self) -> int:
        """Runs indexed so far."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def facets(self) -> dict[str, list[Any]]:
        """The distinct values of each filter column, for the filter menus."""
        with self._lock:
            return {c: [r[0] for r in self._db.execute(
                f"SELECT DISTINCT {c} FROM runs WHERE {c} IS NOT NULL ORDER BY {c}")]
                for c in FILTERS}

    def page(self, filters: Mapping[str, str], *, sort: str = "finished_at", desc: bool = False,
             offset: int = 0, limit: int = 50) -> Page:
        """One page of runs matching ``filters`` (column -> value, compared as text).

        Raises:
            ConfigError: For an unknown filter or sort column, or a bad offset or limit.
        """
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown or sort not in SORTS:
            raise ConfigError(f"unknown filter or sort column {(unknown or [sort])[0]!r}: "
                              f"filter by {', '.join(FILTERS)}; sort by {', '.join(SORTS)}")
        if offset < 0 or not 0 < limit <= _MAX_PAGE:
            raise ConfigError(f"offset must be >= 0 and limit in 1..{_MAX_PAGE}")
        where: list[str] = []
        params: list[int | str | None] = []
        for column, value in filters.items():
            if column == "correct":
                where.append("correct IS ?")
                params.append(None if value in ("", "none") else int(value in ("1", "true")))
            else:
                where.append(f"{column} = ?")
                params.append(int(value) if _COLUMNS[column] == "INTEGER" else value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = f" ORDER BY {sort} {'DESC' if desc else 'ASC'}, rid {'DESC' if desc else 'ASC'}"
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) FROM runs{clause}", params)
                        .fetchone()[0])
            cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs{clause}{order} "
                                   "LIMIT ? OFFSET ?", [*params, limit, offset])
            rows = [dict(zip(_COLUMNS, r, strict=True)) for r in cur]
        for row in rows:
            row["correct"] = None if row["correct"] is None else bool(row["correct"])
            row["simulated"] = bool(row["simulated"])
        return Page(total, rows, offset, limit)

    def close(self) -> None:
        """Drop the index."""
        with self._lock:
            self._db.close()


class OutputFolder:
    """An ablation output folder, read-only: its runs, ledger and checkpoints.

    Raises:
        ConfigError: If ``path`` is not an output folder, or one of its files is not
            stratagem's or was written by a newer stratagem.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        results, ledger = self.path / "results.sqlite", self.path / "ledger.sqlite"
        if not self.path.is_dir():
            raise ConfigError(f"{self.path} is not a folder: pass the output folder "
                              "`stratagem ablate` wrote")
        if not results.is_file() or not ledger.is_file():
            raise ConfigError(f"{self.path} is not an ablation output folder (no "
                              "results.sqlite and ledger.sqlite): pass the folder "
                              "`stratagem ablate` wrote")
        self._results = connect_ro(results)
        self._ledger = connect_ro(ledger)
        try:
            _check_version(_meta(self._results, "results_meta", results, "results"), results,
                           "results", "stratagem-results", RESULTS_SCHEMA_VERSION)
            _check_version(_meta(self._ledger, "stratagem_meta", ledger, "ledger"), ledger,
                           "ledger", "stratagem-ledger", SCHEMA_VERSION)
        except ConfigError:
            self.close()
            raise
        checkpoints = self.path / "checkpoints.sqlite"
        self._checkpoints = connect_ro(checkpoints) if checkpoints.is_file() else None
        self.index = RunIndex(results)
        self._lock = threading.Lock()

    @property
    def config_text(self) -> str | None:
        """The config the folder was run with, if it was copied in."""
        path = self.path / "config.toml"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def record(self, run_id: str) -> dict[str, Any] | None:
        """One run's full record, or ``None``."""
        with self._lock:
            row = self._results.execute("SELECT record FROM runs WHERE run_id = ?",
                                        (run_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def records_json(self) -> list[str]:
        """Every record, as the JSON it is stored as, in the order written."""
        with self._lock:
            return [r[0] for r in self._results.execute("SELECT record FROM runs ORDER BY rowid")]

    def calls(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Ledger rows (of one run, or all), in the order written, as column -> value."""
        sql = "SELECT * FROM ledger_calls"
        params: Sequence[Any] = ()
        if run_id is not None:
            sql, params = sql + " WHERE run_id = ?", (run_id,)
        with self._lock:
            cur = self._ledger.execute(sql + " ORDER BY rowid", params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur]

    def transfers(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Budget transfers (of one run, or all), in the order written."""
        sql = "SELECT * FROM ledger_transfers"
        params: Sequence[Any] = ()
        if run_id is not None:
            sql, params = sql + " WHERE run_id = ?", (run_id,)
        with self._lock:
            cur = self._ledger.execute(sql + " ORDER BY rowid", params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur]

    def checkpoint_writes(self, run_id: str) -> list[tuple[str, str, int, str, str, bytes]]:
        """The run's checkpointed task writes ``(task_id, task_path, idx, channel, type,
        value)`` in the order written; empty when the run was not durable."""
        if self._checkpoints is None:
            return []
        with self._lock:
            try:
                return list(self._checkpoints.execute(
                    "SELECT task_id, task_path, idx, channel, type, value FROM writes "
                    "WHERE thread_id = ? ORDER BY rowid", (run_id,)))
            except sqlite3.Error:  # not a checkpoint file: no text to show
                return []

    def results_frame(self) -> pd.DataFrame:
        """Every record as a DataFrame, as :meth:`ResultsStore.to_pandas` gives it."""
        return records_frame(RunRecord.model_validate_json(r) for r in self.records_json())

    def ledger(self) -> TokenLedger:
        """The whole ledger, in memory (read-only on the file)."""
        ledger = TokenLedger()
        for row in self.calls():
            row["started_at"] = datetime.fromisoformat(row["started_at"])
            row["labels"] = json.loads(row["labels"])
            ledger.append(LedgerEntry.model_construct(**row))  # validated when written
        for row in self.transfers():
            row["at"] = datetime.fromisoformat(row["at"])
            ledger.record_transfer(Transfer.model_construct(**row))
        return ledger

    def close(self) -> None:
        """Close every file."""
        for conn in (self._results, self._ledger, getattr(self, "_checkpoints", None)):
            if conn is not None:
                conn.close()
        index = getattr(self, "index", None)
        if index is not None:
            index.close()
