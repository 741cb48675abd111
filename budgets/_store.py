"""Durable ledger storage: one SQLite file in WAL mode, one row per call, keyed by call_id."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from stratagem._sqlite import connect_readonly
from stratagem.budgets._aggregate import (
    GROUPABLE_FIELDS,
    UsageTotals,
    filter_entries,
    group_entries,
    sum_entries,
)
from stratagem.budgets._entries import LedgerEntry, Transfer
from stratagem.budgets._export import export_csv, export_jsonl
from stratagem.errors import LedgerError, LedgerFormatError

__all__ = ["SCHEMA_VERSION", "LedgerStore", "Synchronous"]

SCHEMA_VERSION = 2
"""Version of the on-disk schema this stratagem writes. Newer files are refused, not guessed at.

Version 2 added the ``cap_sent`` column, the write-ahead ``ledger_intents`` and the recorded
outcomes of logical calls (``ledger_replies``, for replay on resume). Version 1 files are
upgraded in place when opened for writing (columns and tables added; no row changes)."""

_KIND = "stratagem-ledger"

Synchronous = Literal["normal", "full"]

_CALL_COLUMNS = (
    "call_id", "run_id", "thread_id", "task_id", "attempt", "role", "node", "branch", "model",
    "backend", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
    "cost_usd", "latency_s", "usage_source", "status", "error", "request_id", "started_at",
    "labels", "cap_sent",
)
_TRANSFER_COLUMNS = ("event_id", "run_id", "from_role", "to_role", "tokens", "reason", "node", "at")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS stratagem_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_calls (
    call_id TEXT PRIMARY KEY NOT NULL,
    run_id TEXT NOT NULL, thread_id TEXT NOT NULL, task_id TEXT, attempt INTEGER NOT NULL,
    role TEXT NOT NULL, node TEXT NOT NULL, branch TEXT, model TEXT NOT NULL,
    backend TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER, reasoning_tokens INTEGER, cost_usd REAL, latency_s REAL NOT NULL,
    usage_source TEXT NOT NULL, status TEXT NOT NULL, error TEXT, request_id TEXT,
    started_at TEXT NOT NULL, labels TEXT NOT NULL, cap_sent INTEGER
);
CREATE INDEX IF NOT EXISTS ledger_calls_run ON ledger_calls (run_id);
CREATE TABLE IF NOT EXISTS ledger_transfers (
    event_id TEXT PRIMARY KEY NOT NULL, run_id TEXT NOT NULL, from_role TEXT NOT NULL,
    to_role TEXT NOT NULL, tokens INTEGER NOT NULL, reason TEXT NOT NULL, node TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_intents (
    call_id TEXT PRIMARY KEY NOT NULL, run_id TEXT NOT NULL, owner TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_replies (
    run_id TEXT NOT NULL, key TEXT NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (run_id, key)
);
INSERT OR IGNORE INTO stratagem_meta VALUES ('kind', '{_KIND}');
INSERT OR IGNORE INTO stratagem_meta VALUES ('schema_version', '{SCHEMA_VERSION}');
"""

_INSERT_CALL = (
    f"INSERT OR IGNORE INTO ledger_calls ({', '.join(_CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_CALL_COLUMNS))})"
)
_INSERT_TRANSFER = (
    f"INSERT OR IGNORE INTO ledger_transfers ({', '.join(_TRANSFER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_TRANSFER_COLUMNS))})"
)


def _call_params(e: LedgerEntry) -> tuple[Any, ...]:
    return (
        e.call_id, e.run_id, e.thread_id, e.task_id, e.attempt, e.role, e.node, e.branch,
        e.model, e.backend, e.prompt_tokens, e.completion_tokens, e.cached_tokens,
        e.reasoning_tokens, e.cost_usd, e.latency_s, e.usage_source, e.status, e.error,
        e.request_id, e.started_at.isoformat(),
        _labels_json(e.labels) if e.labels else "{}", e.cap_sent,
    )


_labels_json = json.JSONEncoder(sort_keys=True).encode
"""``json.dumps(labels, sort_keys=True)`` without the per-call set-up of ``json.dumps``."""


def _entry_from_row(row: tuple[Any, ...]) -> LedgerEntry:
    values = dict(zip(_CALL_COLUMNS, row, strict=True))
    values["started_at"] = datetime.fromisoformat(values["started_at"])
    values["labels"] = json.loads(values["labels"])
    # Rows were validated when written; skipping validation makes reading 1M rows fast.
    return LedgerEntry.model_construct(**values)


def _transfer_from_row(row: tuple[Any, ...]) -> Transfer:
    values = dict(zip(_TRANSFER_COLUMNS, row, strict=True))
    values["at"] = datetime.fromisoformat(values["at"])
    return Transfer.model_construct(**values)


class LedgerStore:
    """A durable, append-only ledger file (SQLite, WAL mode), or ``":memory:"``.

    Each :meth:`append` is its own committed transaction: when it returns, the row survives the
    process being killed (``kill -9``). With ``synchronous="full"`` it also survives a power
    loss, at the cost of an fsync per row. Appending a ``call_id`` that is already stored is a
    no-op. One store may be shared by threads; several processes may open the same file.

    With ``readonly=True`` the file is only read: nothing is created or changed in its folder
    (no ``-wal``/``-shm`` files, no schema), so a ledger in a folder the user may only read,
    or on a read-only file system, opens; every write raises :class:`LedgerError`.

    Args:
        path: A file path, or ``":memory:"`` for a throwaway store.
        synchronous: ``"normal"`` (durable against process crashes; the default) or
            ``"full"`` (also against power loss).
        readonly: Open an existing ledger file for reading only.

    Raises:
        LedgerFormatError: If the file is not a stratagem ledger, or was written by a newer
            stratagem with a schema this version cannot read; with ``readonly``, also if it
            does not exist or cannot be read.
    """

    def __init__(self, path: str | Path = ":memory:", *, synchronous: Synchronous = "normal",
                 readonly: bool = False):
        self.path = str(path)
        self.readonly = readonly
        """Whether the store was opened for reading only."""
        self._select = ", ".join(_CALL_COLUMNS)
        self._tables: set[str] | None = None  # read-only: the tables the file has
        self._lock = threading.Lock()
        self._closed = False
        if synchronous not in ("normal", "full"):
            raise LedgerFormatError(
                f"unknown synchronous mode {synchronous!r}: use 'normal' or 'full'"
            )
        if self.path != ":memory:" and Path(self.path).is_dir():
            raise LedgerFormatError(f"{self.path} is a directory: give a ledger file path")
        try:
            if readonly:
                self._conn = self._connect_readonly()
            else:
                self._conn = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=30.0
                )
        except sqlite3.Error as exc:
            raise LedgerFormatError(f"cannot open ledger {self.path}: {exc}") from exc
        try:
            self._check_and_init(synchronous)
        except BaseException:
            self._conn.close()
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            raise LedgerFormatError("a read-only ledger needs a file: pass the path of one")
        try:
            return connect_readonly(self.path)
        except FileNotFoundError as exc:
            raise LedgerFormatError(f"{self.path} does not exist: pass an existing ledger "
                                    "file") from exc
        except sqlite3.OperationalError as exc:
            raise LedgerFormatError(f"cannot read ledger {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise LedgerFormatError(
                f"{self.path} is not a stratagem ledger (not an SQLite database: {exc}); "
                "pass an existing ledger file"
            ) from exc

    def _check_and_init(self, synchronous: Synchronous) -> None:
        try:
            tables = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise LedgerFormatError(
                f"{self.path} is not a stratagem ledger (not an SQLite database: {exc}); "
                "pass a new path or an existing ledger file"
            ) from exc
        if tables:
            if "stratagem_meta" not in tables:
                raise LedgerFormatError(
                    f"{self.path} is an SQLite database but not a stratagem ledger "
                    "(no stratagem_meta table); pass a new path or an existing ledger file"
                )
            meta = dict(self._conn.execute("SELECT key, value FROM stratagem_meta").fetchall())
            if meta.get("kind") != _KIND:
                raise LedgerFormatError(
                    f"{self.path} is not a stratagem ledger (kind={meta.get('kind')!r})"
                )
            version = int(meta.get("schema_version", "0"))
            if version > SCHEMA_VERSION:
                raise LedgerFormatError(
                    f"{self.path} has ledger schema version {version}, but this stratagem reads "
                    f"up to version {SCHEMA_VERSION}: upgrade stratagem to open it"
                )
        if self.readonly:
            if not tables:
                raise LedgerFormatError(f"{self.path} is not a stratagem ledger (an empty "
                                        "database); pass an existing ledger file")
            # Nothing to set up, nothing to write: a version 1 file is read as it is.
            self._tables = tables
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(ledger_calls)")}
            if "cap_sent" not in columns:
                self._select = ", ".join("NULL" if c == "cap_sent" else c
                                         for c in _CALL_COLUMNS)
            return
        if self.path != ":memory:":
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"could not put {self.path} in WAL mode (got {mode})")
        self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if "ledger_calls" in tables:
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(ledger_calls)")}
            if "cap_sent" not in columns:  # a version 1 file
                self._conn.execute("ALTER TABLE ledger_calls ADD COLUMN cap_sent INTEGER")
        self._conn.executescript(_SCHEMA)
        self._conn.execute("UPDATE stratagem_meta SET value = ? WHERE key = 'schema_version'",
                           (str(SCHEMA_VERSION),))

    # -- writing ---------------------------------------------------------------------------

    def _write(self, sql: str, params: Iterable[tuple[Any, ...]], many: bool) -> int:
        with self._lock:
            if self.readonly:
                raise LedgerError(f"ledger {self.path} was opened read-only; nothing was "
                                  "recorded")
            if self._closed:
                raise LedgerError(f"ledger store {self.path} is closed; nothing was recorded")
            try:
                if many:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        before = self._conn.total_changes
                        self._conn.executemany(sql, params)
                        changed = self._conn.total_changes - before
                        self._conn.execute("COMMIT")
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    return changed
                (one,) = params
                cur = self._conn.execute(sql, one)
                return cur.rowcount
            except sqlite3.Error as exc:
                raise LedgerError(f"could not write to ledger {self.path}: {exc}") from exc

    def append(self, entry: LedgerEntry) -> bool:
        """Durably record one call; returns ``False`` if its ``call_id`` was already stored.

        Raises:
            LedgerError: If the row could not be written (closed store, disk full, ...).
        """
        return self._write(_INSERT_CALL, (_call_params(entry),), many=False) == 1

    def append_many(self, entries: Iterable[LedgerEntry]) -> int:
        """Durably record several calls in one transaction (all or none); returns how many
        were new. Use it for imports; live calls use :meth:`append`, one commit per call."""
        return self._write(_INSERT_CALL, [_call_params(e) for e in entries], many=True)

    def append_transfer(self, transfer: Transfer) -> bool:
        """Durably record one budget transfer; returns ``False`` if already stored."""
        params = (
            transfer.event_id, transfer.run_id, transfer.from_role, transfer.to_role,
            transfer.tokens, transfer.reason, transfer.node, transfer.at.isoformat(),
        )
        return self._write(_INSERT_TRANSFER, (params,), many=False) == 1

    # -- write-ahead intents and recorded outcomes ----------------------------------------

    def open_intent(self, entry: LedgerEntry, owner: str) -> None:
        """Durably note that ``entry``'s request is about to leave (its row as it would read
        if the process died now: status ``lost``, charged at its reservation)."""
        self._write("INSERT OR REPLACE INTO ledger_intents VALUES (?, ?, ?, ?)",
                    ((entry.call_id, entry.run_id, owner, entry.model_dump_json()),), many=False)

    def drop_intent(self, call_id: str) -> None:
        """Forget an intent whose request never left (its reservation was released)."""
        self._write("DELETE FROM ledger_intents WHERE call_id = ?", ((call_id,),), many=False)

    def complete(self, entry: LedgerEntry, reply: tuple[str, dict[str, Any]] | None = None
                 ) -> bool:
        """Record ``entry`` and close its intent in one transaction, with the outcome of its
        logical call (``(key, outcome)``) when this attempt ended it. Returns ``False`` if
        the row was already stored."""
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger store {self.path} is closed; nothing was recorded")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    new = self._conn.execute(_INSERT_CALL, _call_params(entry)).rowcount == 1
                    self._conn.execute("DELETE FROM ledger_intents WHERE call_id = ?",
                                       (entry.call_id,))
                    if reply is not None:
                        self._conn.execute(
                            "INSERT OR REPLACE INTO ledger_replies VALUES (?, ?, ?)",
                            (entry.run_id, reply[0], json.dumps(reply[1], sort_keys=True)))
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                return new
            except sqlite3.Error as exc:
                raise LedgerError(f"could not write to ledger {self.path}: {exc}") from exc

    def write_group(self, intents: Sequence[LedgerEntry],
                    rows: Sequence[tuple[LedgerEntry, tuple[str, dict[str, Any]] | None]],
                    owner: str) -> None:
        """Open ``intents`` and :meth:`complete` ``rows`` in one transaction: the group
        commit of a fan-out's calls (each durable when this returns, all or none).

        Raises:
            LedgerError: If the transaction could not be written; nothing of it is stored.
        """
        with self._lock:
            if self.readonly:
                raise LedgerError(f"ledger {self.path} was opened read-only; nothing was "
                                  "recorded")
            if self._closed:
                raise LedgerError(f"ledger store {self.path} is closed; nothing was recorded")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if intents:
                        self._conn.executemany(
                            "INSERT OR REPLACE INTO ledger_intents VALUES (?, ?, ?, ?)",
                            [(e.call_id, e.run_id, owner, e.model_dump_json()) for e in intents])
                    if rows:
                        self._conn.executemany(_INSERT_CALL, [_call_params(e) for e, _ in rows])
                        self._conn.executemany("DELETE FROM ledger_intents WHERE call_id = ?",
                                               [(e.call_id,) for e, _ in rows])
                        replies = [(e.run_id, r[0], json.dumps(r[1], sort_keys=True))
                                   for e, r in rows if r is not None]
                        if replies:
                            self._conn.executemany(
                                "INSERT OR REPLACE INTO ledger_replies VALUES (?, ?, ?)",
                                replies)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise LedgerError(f"could not write to ledger {self.path}: {exc}") from exc

    def record_reply(self, run_id: str, key: str, outcome: dict[str, Any]) -> None:
        """Durably record how a logical call ended (a failure after every retry)."""
        self._write("INSERT OR REPLACE INTO ledger_replies VALUES (?, ?, ?)",
                    ((run_id, key, json.dumps(outcome, sort_keys=True)),), many=False)

    def replies(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The recorded outcomes of ``run_id``'s logical calls, by replay key."""
        if self._tables is not None and "ledger_replies" not in self._tables:
            return {}  # a version 1 file opened read-only
        rows = self._read("SELECT key, outcome FROM ledger_replies WHERE run_id = ?", (run_id,))
        return {k: json.loads(v) for k, v in rows}

    def intents(self) -> list[tuple[str, LedgerEntry]]:
        """Open intents: ``(owner, row as it would read if lost)``, oldest first."""
        if self._tables is not None and "ledger_intents" not in self._tables:
            return []  # a version 1 file opened read-only
        rows = self._read("SELECT owner, entry FROM ledger_intents ORDER BY rowid")
        return [(owner, LedgerEntry.model_validate_json(e)) for owner, e in rows]

    def recover(self, entries: Iterable[LedgerEntry]) -> int:
        """Turn the intents of ``entries`` (their ``lost`` rows) into ledger rows, in one
        transaction; returns how many rows were new."""
        params = [_call_params(e) for e in entries]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    before = self._conn.total_changes
                    self._conn.executemany(_INSERT_CALL, params)
                    new = self._conn.total_changes - before
                    self._conn.executemany("DELETE FROM ledger_intents WHERE call_id = ?",
                                           [(p[0],) for p in params])
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                return new
            except sqlite3.Error as exc:
                raise LedgerError(f"could not write to ledger {self.path}: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger store {self.path} is closed")
            return self._conn.execute(sql, params).fetchall()

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM ledger_calls")[0][0])

    def __contains__(self, call_id: object) -> bool:
        if not isinstance(call_id, str):
            return False
        return bool(self._read("SELECT 1 FROM ledger_calls WHERE call_id = ?", (call_id,)))

    def entries(self, **filters: Any) -> list[LedgerEntry]:
        """Stored rows in the order they were written, optionally filtered like
        :meth:`TokenLedger.entries`. Plain field filters run in SQL."""
        where, params, rest = [], [], {}
        for key, value in filters.items():
            column = {"run": "run_id", "thread": "thread_id"}.get(key, key)
            if column in GROUPABLE_FIELDS and not isinstance(value, list | tuple | set):
                where.append(f"{column} IS ?")
                params.append(value)
            else:
                rest[key] = value
        sql = f"SELECT {self._select} FROM ledger_calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY rowid", tuple(params))
        return list(filter_entries([_entry_from_row(r) for r in rows], rest))

    def iter_entries(self, batch: int = 10_000) -> Iterator[LedgerEntry]:
        """Every stored row, read in batches (for files too large to load at once)."""
        last = 0
        while True:
            rows = self._read(
                f"SELECT rowid, {self._select} FROM ledger_calls "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            for r in rows:
                yield _entry_from_row(r[1:])
            last = rows[-1][0]

    def transfers(self, run_id: str | None = None) -> list[Transfer]:
        """Stored budget transfers in the order they were written."""
        sql = f"SELECT {', '.join(_TRANSFER_COLUMNS)} FROM ledger_transfers"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params = (run_id,)
        return [_transfer_from_row(r) for r in self._read(sql + " ORDER BY rowid", params)]

    def totals(self, **filters: Any) -> UsageTotals:
        """Sums over the stored rows (or those matching ``filters``)."""
        return sum_entries(self.entries(**filters))

    def group_by(self, *keys: str, **filters: Any) -> dict[Any, UsageTotals]:
        """Sums per value of ``keys`` over the stored rows."""
        return group_entries(self.entries(**filters), *keys)

    def export_jsonl(self, path: str | Path) -> int:
        """Write every row and transfer as JSON lines; returns the number of lines."""
        return export_jsonl(path, self.iter_entries(), self.transfers())

    def export_csv(self, path: str | Path) -> int:
        """Write every call row as CSV (transfers to ``<stem>.transfers.csv``)."""
        return export_csv(path, self.iter_entries(), self.transfers())

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file. Further appends raise :class:`LedgerError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LedgerStore({self.path!r}{', readonly=True' if self.readonly else ''})"
