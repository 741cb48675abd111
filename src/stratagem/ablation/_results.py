"""Tidy results in SQLite (one row per run), exportable to CSV and Parquet."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from stratagem._redact import redact_value
from stratagem._sqlite import connect_readonly
from stratagem.errors import ConfigError, LedgerError, LedgerFormatError
from stratagem.records import RunRecord, records_frame

__all__ = ["ResultsStore", "records_frame"]

_KIND = "stratagem-results"
_VERSION = 2
"""Version of the results file this stratagem writes (exported as ``RESULTS_SCHEMA_VERSION``).
2: records carry failed_calls (older readers refuse such files cleanly)."""


class ResultsStore:
    """Append-only SQLite table of :class:`RunRecord` rows, keyed by ``run_id``.

    A run already stored is never run again: that is what makes an ablation resumable.

    Args:
        path: The SQLite file (created if missing, unless ``readonly``).
        readonly: Only read an existing file: nothing is created or changed in its folder
            (no ``-wal``/``-shm`` files), so results in a folder the user may only read
            open; every write raises :class:`~stratagem.errors.LedgerError`.

    Raises:
        LedgerFormatError: If the file is not a stratagem results file or is newer (or,
            read-only, does not exist).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        """Whether the file was opened for reading only."""
        self._lock = threading.Lock()
        try:
            self._conn = (connect_readonly(self.path) if readonly else
                          sqlite3.connect(self.path, check_same_thread=False,
                                          isolation_level=None, timeout=30.0))
        except FileNotFoundError as exc:
            raise LedgerFormatError(f"{self.path} does not exist: pass an existing results "
                                    "file") from exc
        except sqlite3.OperationalError as exc:
            raise LedgerFormatError(f"cannot read results {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise LedgerFormatError(f"{self.path} is not a stratagem results file: {exc}") \
                from exc
        try:
            tables = {r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LedgerFormatError(f"{self.path} is not a stratagem results file: {exc}") \
                from exc
        if tables and "results_meta" not in tables:
            self._conn.close()
            raise LedgerFormatError(f"{self.path} is an SQLite file but not stratagem results")
        if readonly:
            self._check_readonly(tables)
            return
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(
            "CREATE TABLE IF NOT EXISTS results_meta (key TEXT PRIMARY KEY, value TEXT);"
            "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, cell TEXT NOT NULL,"
            " record TEXT NOT NULL);"
            f"INSERT OR IGNORE INTO results_meta VALUES ('kind', '{_KIND}');"
            f"INSERT OR IGNORE INTO results_meta VALUES ('schema_version', '{_VERSION}');"
        )
        meta = dict(self._conn.execute("SELECT key, value FROM results_meta").fetchall())
        if meta.get("kind") != _KIND or int(meta.get("schema_version", "0")) > _VERSION:
            self._conn.close()
            raise LedgerFormatError(
                f"{self.path} was written by a newer stratagem or is not a results file: "
                "upgrade stratagem or use a new output folder"
            )
        # An older file gets this version's records from now on: say so, so that an older
        # stratagem refuses it with the message above rather than failing on a new field.
        self._conn.execute("UPDATE results_meta SET value = ? WHERE key = 'schema_version'",
                           (str(_VERSION),))

    def _check_readonly(self, tables: set[str]) -> None:
        meta: dict[str, str] = {}
        if "results_meta" in tables:
            meta = dict(self._conn.execute("SELECT key, value FROM results_meta").fetchall())
        if (meta.get("kind") != _KIND or "runs" not in tables
                or int(meta.get("schema_version", "0")) > _VERSION):
            self._conn.close()
            raise LedgerFormatError(
                f"{self.path} is not a results file this stratagem reads (empty, another "
                "kind, or written by a newer stratagem, which an upgrade reads)"
            )

    def _writable(self) -> None:
        if self.readonly:
            raise LedgerError(f"results {self.path} were opened read-only; nothing was "
                              "written")

    def settings(self) -> dict[str, str]:
        """The settings recorded with the runs, by scope (see :meth:`record_settings`)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, value FROM results_meta WHERE key LIKE 'settings:%'").fetchall()
        return {k.removeprefix("settings:"): v for k, v in rows}

    def scopes_in_use(self) -> set[str]:
        """The settings scopes finished runs depend on: ``run`` once any run is recorded,
        and ``suite:``, ``topology:`` and ``policy:`` each name a record carries."""
        fields = ("suite", "topology", "policy")
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT DISTINCT " + ", ".join(f"json_extract(record, '$.{f}')"
                                                   for f in fields) + " FROM runs").fetchall()
            except sqlite3.OperationalError:  # an SQLite built without its JSON functions
                rows = list({tuple(json.loads(r)[f] for f in fields) for (r,) in
                             self._conn.execute("SELECT record FROM runs")})
        scopes = {"run"} if rows else set()
        for suite, topology, policy in rows:
            scopes |= {f"suite:{suite}", f"topology:{topology}", f"policy:{policy}"}
        return scopes

    def record_settings(self, settings: Mapping[str, str]) -> None:
        """Record (or replace) the settings of the given scopes."""
        self._writable()
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO results_meta VALUES (?, ?)",
                                   [(f"settings:{k}", v) for k, v in settings.items()])

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the file's write lock: another process's reads and writes of settings wait."""
        self._writable()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def add(self, record: RunRecord, *, replace: bool = False) -> None:
        """Store one run's record durably. A second record for the same run is ignored,
        unless ``replace`` (a rerun of a failed run: the new record replaces the old)."""
        self._writable()
        data = json.dumps(redact_value(record.model_dump(mode="json")))
        verb = "REPLACE" if replace else "IGNORE"
        with self._lock:
            try:
                self._conn.execute(f"INSERT OR {verb} INTO runs VALUES (?, ?, ?)",
                                   (record.run_id, record.cell, data))
            except sqlite3.Error as exc:
                raise LedgerError(f"could not write results to {self.path}: {exc}") from exc

    def done(self) -> set[str]:
        """Run ids already recorded."""
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT run_id FROM runs")}

    def records(self) -> list[RunRecord]:
        """Every stored record, in the order written."""
        with self._lock:
            rows = self._conn.execute("SELECT record FROM runs ORDER BY rowid").fetchall()
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def frame(self) -> pd.DataFrame:
        """Every stored record as a DataFrame."""
        return records_frame(self.records())

    def to_pandas(self) -> pd.DataFrame:
        """Every stored record as a DataFrame, one row per run (the same as :meth:`frame`)."""
        return self.frame()

    def export_csv(self, path: str | Path) -> Path:
        """Write the results as CSV."""
        out = Path(path)
        self.frame().to_csv(out, index=False)
        return out

    def export_parquet(self, path: str | Path) -> Path:
        """Write the results as Parquet (needs ``pyarrow``)."""
        out = Path(path)
        try:
            self.frame().to_parquet(out, index=False)
        except ImportError as exc:
            raise ConfigError("Parquet export needs pyarrow: pip install pyarrow") from exc
        return out

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
