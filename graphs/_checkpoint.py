"""Checkpoint files: LangGraph's SQLite saver with our pragmas and group commit.

A fan-out's branches each save their writes when they finish (so a crash re-runs only the
unfinished ones). LangGraph's ``AsyncSqliteSaver`` gives every such save its own
transaction and four round trips to the SQLite thread; with 64 branches finishing within a
few milliseconds those round trips are most of the cost of checkpointing. Here the saves
queued while a commit is in progress share the next one (group commit): each save still
returns only once its rows are committed, so what survives a crash is unchanged; and if a
shared commit fails, each save is retried in a transaction of its own, so one bad write fails
only its own caller, as upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from stratagem.errors import ConfigError

__all__ = ["sqlite_checkpointer"]

_SYNCHRONOUS = ("off", "normal", "full")
_INSERT = ("INSERT OR {} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
           "task_path, idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_REPLACE, _IGNORE = _INSERT.format("REPLACE"), _INSERT.format("IGNORE")

_Row = tuple[str, str, str, str, str, int, str, str, bytes]


class _GroupCommitSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` whose ``aput_writes`` calls share transactions."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn)
        self._queue: list[tuple[str, list[_Row], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes; returns once they are committed (with others' if queued)."""
        # The same rows and the same choice of statement as AsyncSqliteSaver.aput_writes.
        query = _REPLACE if all(w[0] in WRITES_IDX_MAP for w in writes) else _IGNORE
        configurable = config["configurable"]
        rows: list[_Row] = [
            (str(configurable["thread_id"]), str(configurable["checkpoint_ns"]),
             str(configurable["checkpoint_id"]), task_id, task_path,
             WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
            for idx, (channel, value) in enumerate(writes)
        ]
        await self.setup()
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((query, rows, committed))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # shield: a caller cancelled while waiting must not cancel the others' commit.
        await asyncio.shield(committed)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            outcomes: list[BaseException | None] = [None] * len(batch)
            cancelled: BaseException | None = None
            async with self.lock:
                try:
                    try:
                        await self._commit(batch)
                    except Exception:
                        # Nothing of a failed batch may ride along with a later commit;
                        # then each caller's writes get a transaction of their own, as
                        # upstream gives them, so one bad write fails only its own caller.
                        await asyncio.shield(self._rollback())
                        for i, entry in enumerate(batch):
                            try:
                                await self._commit([entry])
                            except Exception as exc:
                                await asyncio.shield(self._rollback())
                                outcomes[i] = exc
                except BaseException as exc:  # cancelled: the loop is shutting down
                    await asyncio.shield(self._rollback())
                    cancelled = exc
            if cancelled is not None:
                # Nobody will flush what is queued: fail it too rather than leave it waiting.
                batch, self._queue = batch + self._queue, []
                outcomes = [cancelled] * len(batch)
            for (_, _, committed), outcome in zip(batch, outcomes, strict=True):
                if committed.done():
                    continue
                if outcome is None:
                    committed.set_result(None)
                else:
                    committed.set_exception(outcome)
            if cancelled is not None:
                raise cancelled

    async def _commit(self, batch: Sequence[tuple[str, list[_Row], asyncio.Future[None]]]
                      ) -> None:
        # In queue order, one statement per run of equal statements, so a later write of the
        # same key still wins as it would with one transaction each.
        start = 0
        for end in range(1, len(batch) + 1):
            if end == len(batch) or batch[end][0] != batch[start][0]:
                await self.conn.executemany(
                    batch[start][0], [row for _, rows, _ in batch[start:end] for row in rows])
                start = end
        await self.conn.commit()

    async def _rollback(self) -> None:
        # The connection may be gone; the error that got here is what gets raised.
        with contextlib.suppress(Exception):
            await self.conn.rollback()


@asynccontextmanager
async def sqlite_checkpointer(
    path: str | Path, *, synchronous: str = "normal"
) -> AsyncIterator[AsyncSqliteSaver]:
    """A LangGraph SQLite checkpoint saver on ``path`` (created if missing), in WAL mode.

    Open one for many runs (``arun(..., checkpoint=saver)``) rather than a path per run.
    Branches finishing together share a commit (each still waits for its own).

    Args:
        path: The SQLite file.
        synchronous: ``"normal"`` (the default, as for the ledger store): a checkpoint
            survives the process being killed at any point but not a power cut, with no
            fsync per commit; ``"full"``: also survives a power cut (an fsync per commit,
            several times slower on most disks); ``"off"``: for throwaway runs.

    Raises:
        ConfigError: ``path`` is a directory, or ``synchronous`` is not one of the above.
    """
    if synchronous not in _SYNCHRONOUS:
        raise ConfigError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                          f"got {synchronous!r}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a directory: give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(str(path)) as conn:
        # WAL first (setup() sets it too, later): NORMAL is only crash-safe in WAL mode.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        saver = _GroupCommitSaver(conn)
        try:
            yield saver
        finally:
            flusher = saver._flusher
            if flusher is not None and not flusher.done():
                # Commit what is queued before the connection closes, even if this task is
                # being cancelled (shielded, then awaited to the end).
                try:
                    await asyncio.shield(flusher)
                except asyncio.CancelledError:
                    await asyncio.wait([flusher])
                    raise
                except Exception:
                    pass  # its callers got the error
