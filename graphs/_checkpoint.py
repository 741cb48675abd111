"""Checkpoint files: LangGraph's SQLite saver with our pragmas and group commit.

A fan-out's branches each save their writes when they finish (so a crash re-runs only the
unfinished ones). LangGraph's ``AsyncSqliteSaver`` gives every such save its own
transaction and four round trips to the SQLite thread; with 64 branches finishing within a
few milliseconds those round trips are most of the cost of checkpointing. Here the saves
queued while a commit is in progress share the next one (group commit): each save still
returns only once its rows are committed, so what survives a crash is unchanged; and if a
shared commit fails, each save is retried in a transaction of its own, so one bad write fails
only its own caller, as upstream.

Checkpoints hold the graph state, raw model replies included; a server that quotes the
``Authorization`` header in a reply would put the key in them. Every checkpointer stratagem
creates serializes through :class:`RedactingSerializer`, which applies the redaction used for
logs, ledger rows and exports to each text before it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Send
from pydantic import BaseModel

from stratagem._redact import may_hold_secret, redact
from stratagem.errors import ConfigError

__all__ = ["RedactingSerializer", "redact_state", "sqlite_checkpointer"]

_SYNCHRONOUS = ("off", "normal", "full")
_INSERT = ("INSERT OR {} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
           "task_path, idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_REPLACE, _IGNORE = _INSERT.format("REPLACE"), _INSERT.format("IGNORE")

_Row = tuple[str, str, str, str, str, int, str, str, bytes]


def redact_state(value: Any) -> Any:
    """``value`` with every secret in its texts replaced by ``[REDACTED]``; same shape and types.

    Walks what graph state and checkpoints are made of: mappings (keys too), lists, tuples
    (named ones included), sets, LangGraph ``Send`` packets, dataclasses and pydantic models.
    Anything else (numbers, bytes, other objects) is kept as is. Unlike the ledger's
    redaction, a field is never replaced whole because of its name: a checkpoint must load
    back with the types it was saved with. Unchanged values are returned as the same object.

    Example:
        >>> redact_state({"answer": "Bearer abcdefgh12345678", "round": 2})
        {'answer': '[REDACTED]', 'round': 2}
    """
    if isinstance(value, str):
        cleaned = redact(value)
        return value if cleaned == value else cleaned
    if isinstance(value, dict):
        out = {redact_state(k): redact_state(v) for k, v in value.items()}
        if len(out) == len(value) and all(k in value and out[k] is value[k] for k in out):
            return value
        return out  # a plain dict, also for a dict subclass (state and checkpoints use dict)
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_state(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, Send):
        arg = redact_state(value.arg)
        return value if arg is value.arg else Send(value.node, arg)
    if isinstance(value, BaseModel):
        update = {name: redact_state(getattr(value, name)) for name in type(value).model_fields}
        changed = {k: v for k, v in update.items() if v is not getattr(value, k)}
        return value.model_copy(update=changed) if changed else value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: redact_state(getattr(value, f.name))
                  for f in dataclasses.fields(value) if f.init}
        changed = {k: v for k, v in fields.items() if v is not getattr(value, k)}
        return dataclasses.replace(value, **changed) if changed else value
    return value


class RedactingSerializer(JsonPlusSerializer):
    """LangGraph's default serializer, with secrets redacted from every value it writes.

    A drop-in ``serde=`` for any LangGraph checkpointer: checkpoints and pending writes go
    through :func:`redact_state` and then through :class:`JsonPlusSerializer` unchanged, so
    they load back as they always did (with the secrets replaced by ``[REDACTED]``: a run
    resumed from a checkpoint sees the redacted text, as the ledger and the logs do). It
    subclasses rather than wraps, so LangGraph's msgpack allowlist keeps applying to it.

    Example:
        >>> serde = RedactingSerializer()
        >>> serde.loads_typed(serde.dumps_typed({"reply": "Authorization: Bearer abcdefgh1234"}))
        {'reply': 'Authorization: [REDACTED]'}
    """

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Serialize ``obj`` with its secrets redacted (walking the value only when its
        bytes could hold one: most checkpoints do not, and the walk is the cost)."""
        kind, data = super().dumps_typed(obj)
        if not may_hold_secret(data):
            return kind, data
        return super().dumps_typed(redact_state(obj))


class _GroupCommitSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` whose ``aput_writes`` calls share transactions."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn, serde=RedactingSerializer())
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
    Branches finishing together share a commit (each still waits for its own). Secrets are
    redacted from everything it writes (:class:`RedactingSerializer`).

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
