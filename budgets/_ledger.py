"""The token ledger: an append-only, deduplicating record of every call and budget move."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratagem.budgets._aggregate import UsageTotals, filter_entries, group_entries, sum_entries
from stratagem.budgets._entries import LedgerEntry, Transfer
from stratagem.budgets._events import AccountEvent, CallRecorded, TransferRecorded
from stratagem.budgets._export import export_csv, export_jsonl
from stratagem.budgets._frames import entries_frame
from stratagem.budgets._store import LedgerStore, Synchronous
from stratagem.logging import get_logger

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TokenLedger"]

_log = get_logger("stratagem.ledger")


class TokenLedger:
    """Append-only record of every HTTP-level call (billed view) and every budget transfer.

    Safe to share between threads and asyncio tasks: appends hold a lock and never await.
    Appending a row whose ``call_id`` is already present is a no-op (so retries of the
    *recording* never double count). With a :class:`LedgerStore` attached, each append is
    written durably to the store before it becomes visible here.

    Example:
        >>> ledger = TokenLedger()
        >>> ledger.append(LedgerEntry(role="solver", model="m", prompt_tokens=10,
        ...                           completion_tokens=5))
        True
        >>> ledger.totals().total_tokens
        15
    """

    def __init__(self, store: LedgerStore | None = None) -> None:
        """Create an empty ledger, optionally writing through to ``store``.

        Rows already in ``store`` are loaded, so reopening a ledger file continues it.
        """
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._ids: dict[str, LedgerEntry] = {}
        self._by_run: dict[str, list[LedgerEntry]] = {}
        self._transfers: list[Transfer] = []
        self._transfer_ids: set[str] = set()
        self._intents: dict[str, LedgerEntry] = {}
        self._listeners: list[Callable[[AccountEvent], None]] = []
        self._replies: dict[str, dict[str, dict[str, Any]]] = {}
        self._groups: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        self._store = store
        if store is not None:
            if not store.readonly:
                self.recovered = store.recover(e for owner, e in store.intents()
                                               if not _owner_alive(owner))
            for e in store.entries():
                self._remember(e)
            if store.readonly:
                # What a writer would recover, shown without writing it: a read-only audit
                # of a crashed folder must not undercount the requests lost in flight.
                for owner, e in store.intents():
                    if not _owner_alive(owner) and e.call_id not in self._ids:
                        self._remember(e)
            for t in store.transfers():
                self._transfer_ids.add(t.event_id)
                self._transfers.append(t)

    recovered: int = 0
    """Rows recovered from intents whose process had died, when the store was opened."""

    def _remember(self, entry: LedgerEntry) -> None:
        self._ids[entry.call_id] = entry
        self._entries.append(entry)
        self._by_run.setdefault(entry.run_id, []).append(entry)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False,
             synchronous: Synchronous = "normal") -> TokenLedger:
        """The ledger in the file at ``path`` (created if missing, unless ``readonly``).

        With ``readonly=True`` the file is read once and closed, and nothing is created or
        changed beside it (see :class:`LedgerStore`): this is how ``stratagem audit`` and
        ``report`` read a folder the user may only read. Appending to such a ledger raises
        :class:`~stratagem.errors.LedgerError`; otherwise the ledger writes through to the
        file, whose store the caller closes (``ledger.store.close()``).

        Raises:
            LedgerFormatError: If the file is not a stratagem ledger (or, read-only, does not
                exist).

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite"
            >>> ledger = TokenLedger.open(path)
            >>> _ = ledger.append(LedgerEntry(role="solver", model="m", prompt_tokens=3))
            >>> ledger.store.close()
            >>> TokenLedger.open(path, readonly=True).totals().prompt_tokens
            3
        """
        store = LedgerStore(path, readonly=readonly, synchronous=synchronous)
        if not readonly:
            return cls(store)
        try:
            return cls(store)
        finally:
            store.close()  # every row is in memory; appends still meet the read-only store

    @property
    def store(self) -> LedgerStore | None:
        """The durable store this ledger writes through to, if any."""
        return self._store

    def append(self, entry: LedgerEntry) -> bool:
        """Record one call. Returns ``False`` if its ``call_id`` was already recorded.

        Raises:
            LedgerError: If the durable store could not write the row; nothing is recorded.
        """
        with self._lock:
            if entry.call_id in self._ids:
                return False
            if self._store is not None:
                self._store.append(entry)
            self._remember(entry)
        self._notify(CallRecorded(entry))
        return True

    # -- write-ahead intents and recorded outcomes ----------------------------------------

    def open_intent(self, entry: LedgerEntry) -> None:
        """Note, durably with a store, that ``entry``'s request is about to leave.

        ``entry`` is the row as it would read if the process died before the reply:
        status ``lost``, charged at the reservation. :meth:`complete` replaces it with the
        real row; a ledger opened on the store after a crash turns it into a row.
        """
        with self._lock:
            if self._store is not None:
                self._store.open_intent(entry, _OWNER)
            self._intents[entry.call_id] = entry

    def drop_intent(self, call_id: str) -> None:
        """Forget an intent whose request never left."""
        with self._lock:
            if self._intents.pop(call_id, None) is not None and self._store is not None:
                self._store.drop_intent(call_id)

    def complete(self, entry: LedgerEntry, reply: tuple[str, dict[str, Any]] | None = None
                 ) -> bool:
        """Record ``entry`` and close its intent, with the outcome of its logical call
        (``(replay key, outcome)``) when this attempt ended it: one durable transaction.

        Raises:
            LedgerError: If the durable store could not write it; nothing is recorded.
        """
        with self._lock:
            if entry.call_id in self._ids:
                return False
            if self._store is not None:
                self._store.complete(entry, reply)
            self._intents.pop(entry.call_id, None)
            self._remember(entry)
            if reply is not None:
                self._replies.setdefault(entry.run_id, {})[reply[0]] = reply[1]
        self._notify(CallRecorded(entry))
        return True

    # -- group commit ----------------------------------------------------------------------

    async def aopen_intent(self, entry: LedgerEntry) -> None:
        """:meth:`open_intent`, in one transaction with the intents and rows other tasks
        of this event loop record in the same step (see :meth:`acomplete`)."""
        await self._grouped(_Pending(entry, None, intent=True))

    async def acomplete(self, entry: LedgerEntry,
                        reply: tuple[str, dict[str, Any]] | None = None) -> bool:
        """:meth:`complete`, sharing one durable transaction with the rows and intents
        other tasks of this event loop record in the same step (group commit).

        The promise is :meth:`complete`'s: when this returns, the row is durable. What is
        shared is the commit: a 64-way fan-out whose replies arrive together writes them in
        a few transactions instead of 64 (bench/ledger.py measures it). A caller cancelled
        while it waits still has its row written; the cancellation is raised after.

        Raises:
            LedgerError: If the transaction could not be written; nothing of it is recorded.
        """
        return await self._grouped(_Pending(entry, reply))

    async def _grouped(self, item: _Pending) -> bool:
        if self._store is None:  # nothing to commit: record it now
            if item.intent:
                self.open_intent(item.entry)
                return True
            return self.complete(item.entry, item.reply)
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            group = self._groups[loop] = []
            # Runs after every task already ready in this step has added its item.
            loop.call_soon(self._commit_group, loop)
        done: asyncio.Future[bool] = loop.create_future()
        item.done = done
        group.append(item)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if not done.done():
                await asyncio.wait([done])  # the write is under way: let it finish
            failure = None if done.cancelled() else done.exception()
            if failure is not None:
                raise failure from None  # it was not written: say so, not "cancelled"
            raise

    def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._groups.pop(loop, [])
        results: list[bool] = []
        written: list[LedgerEntry] = []
        try:
            with self._lock:
                intents = [p.entry for p in group
                           if p.intent and p.entry.call_id not in self._ids]
                rows: list[tuple[LedgerEntry, tuple[str, dict[str, Any]] | None]] = []
                seen: set[str] = set()
                for p in group:
                    new = p.intent or (p.entry.call_id not in self._ids
                                       and p.entry.call_id not in seen)
                    results.append(new)
                    if new and not p.intent:
                        seen.add(p.entry.call_id)
                        rows.append((p.entry, p.reply))
                assert self._store is not None
                self._store.write_group(intents, rows, _OWNER)
                for e in intents:
                    self._intents[e.call_id] = e
                for e, reply in rows:
                    self._intents.pop(e.call_id, None)
                    self._remember(e)
                    written.append(e)
                    if reply is not None:
                        self._replies.setdefault(e.run_id, {})[reply[0]] = reply[1]
        except Exception as exc:
            for p in group:
                if p.done is not None and not p.done.done():
                    p.done.set_exception(exc)
            return
        for p, new in zip(group, results, strict=True):
            if p.done is not None and not p.done.done():
                p.done.set_result(new)
        for e in written:
            self._notify(CallRecorded(e))

    def record_reply(self, run_id: str, key: str, outcome: dict[str, Any]) -> None:
        """Record how a logical call ended when no row carries it (a final failure)."""
        with self._lock:
            if self._store is not None:
                self._store.record_reply(run_id, key, outcome)
            self._replies.setdefault(run_id, {})[key] = outcome

    def replies(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Recorded outcomes of ``run_id``'s logical calls, by replay key (what a rerun of
        the run replays instead of asking the model again)."""
        with self._lock:
            known = dict(self._replies.get(run_id, {}))
        if self._store is not None:
            known = {**self._store.replies(run_id), **known}
        return known

    def intents(self) -> list[LedgerEntry]:
        """Requests in flight now (their rows as they would read if lost)."""
        with self._lock:
            return list(self._intents.values())

    def subscribe(self, listener: Callable[[AccountEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every row and transfer recorded from now on (after it is
        durable), whichever account or import recorded it; returns an unsubscribe function.
        An exception in a listener is logged, not raised."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, event: AccountEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a listener must not break the recording
                _log.warning("ledger.listener_failed", error=f"{type(exc).__name__}: {exc}")

    def extend(self, entries: Iterable[LedgerEntry]) -> int:
        """Record several calls; returns how many were new."""
        return sum(1 for e in entries if self.append(e))

    def record_transfer(self, transfer: Transfer) -> bool:
        """Record a budget transfer. Returns ``False`` if its ``event_id`` was already recorded."""
        with self._lock:
            if transfer.event_id in self._transfer_ids:
                return False
            if self._store is not None:
                self._store.append_transfer(transfer)
            self._transfer_ids.add(transfer.event_id)
            self._transfers.append(transfer)
        self._notify(TransferRecorded(transfer))
        return True

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._ids

    def get(self, call_id: str) -> LedgerEntry | None:
        """The row recorded under ``call_id``, if any."""
        return self._ids.get(call_id)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries())

    def entries(self, **filters: Any) -> list[LedgerEntry]:
        """Rows in the order they were recorded, optionally filtered (``role="solver"``,
        ``**{"label:topology": "refine"}``)."""
        run = filters.get("run_id", filters.get("run"))
        with self._lock:
            if isinstance(run, str):  # the common case (one run's rows): use the index
                snapshot = list(self._by_run.get(run, ()))
            else:
                snapshot = list(self._entries)
        return list(filter_entries(snapshot, filters))

    def transfers(self, run_id: str | None = None) -> list[Transfer]:
        """Budget transfers in the order they were recorded, optionally for one run."""
        with self._lock:
            snapshot = list(self._transfers)
        return [t for t in snapshot if run_id is None or t.run_id == run_id]

    def totals(self, **filters: Any) -> UsageTotals:
        """Sums over all rows, or over the rows matching ``filters``."""
        return sum_entries(self.entries(**filters))

    def group_by(self, *keys: str, **filters: Any) -> dict[Any, UsageTotals]:
        """Sums per value of ``keys``: fields such as ``role``, ``node``, ``model``, ``run``, or
        ``label:NAME``. Several keys give tuple keys."""
        return group_entries(self.entries(**filters), *keys)

    def to_pandas(self, **filters: Any) -> pd.DataFrame:
        """Rows (all, or those matching ``filters``) as a DataFrame, one row per call, labels
        as ``label:NAME`` columns; :meth:`transfers` are not in it."""
        return entries_frame(self.entries(**filters))

    def export_jsonl(self, path: str | Path) -> int:
        """Write every row and transfer as JSON lines; returns the number of lines."""
        return export_jsonl(path, self.entries(), self.transfers())

    def export_csv(self, path: str | Path) -> int:
        """Write every call row as CSV (transfers go to a sibling ``*.transfers.csv``)."""
        return export_csv(path, self.entries(), self.transfers())


_OWNER = f"{socket.gethostname()}:{os.getpid()}"
"""Who owns the intents this process writes: host and pid."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Pending:
    """An intent or a row waiting for its group's commit."""

    __slots__ = ("done", "entry", "intent", "reply")

    def __init__(self, entry: LedgerEntry, reply: tuple[str, dict[str, Any]] | None, *,
                 intent: bool = False) -> None:
        self.entry = entry
        self.reply = reply
        self.intent = intent
        self.done: asyncio.Future[bool] | None = None


def _owner_alive(owner: str, alive: Callable[[int], bool] = _pid_alive) -> bool:
    """Whether the process that wrote an intent may still complete it. Intents of another
    host are left alone (that host's process may be running)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return alive(int(pid))
