"""Durable runs: ``run`` a task through a topology, ``resume`` it after a crash.

With a checkpoint path, every superstep is saved to SQLite with ``durability="sync"`` before
the next one starts, and every model call is in the durable ledger before its result is used.
After a crash (an exception in a branch, or the process killed), :func:`resume` re-runs only
the unfinished work: finished supersteps and finished branches are restored, not repeated.
Inside the nodes that run again, every model call the first execution recorded is replayed
from the ledger, not sent again, and charged to the budget where it was charged then; the
budget is rebuilt from the rest of the run's rows and transfers. So a resumed run takes the
path an uninterrupted one takes, and its tokens are counted once.

Without a checkpoint, running a run id again that already has rows (a rerun after a crash)
replays its recorded calls the same way, from the start.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from stratagem.budgets import Transfer, UsageTotals
from stratagem.errors import ConfigError, RunError, StratagemError
from stratagem.graphs._checkpoint import sqlite_checkpointer
from stratagem.graphs._context import RunContext
from stratagem.logging import bind_run, get_logger

__all__ = ["RunResult", "aresume", "arun", "resume", "run"]

_log = get_logger("stratagem.run")

Checkpoint = str | Path | BaseCheckpointSaver[Any] | None

_NOT_DONE = ("__error__", "__interrupt__")
"""Channels of pending writes that do not mean the task finished (LangGraph's own names; its
constants for them are private since 1.0)."""


@dataclass(frozen=True)
class RunResult:
    """What a run produced and what it cost.

    Attributes:
        run_id: The run's id (on every ledger row of the run).
        thread_id: The checkpoint thread, for :func:`resume`.
        answer: The final answer ("" if none was produced).
        answer_text: The full reply it came from (what a checker reads).
        score: The final answer's judge or verifier score, if scored.
        stop_reason: Why it ended: ``done``, ``accepted by the judge``, ``budget exhausted:
            ...``, ``verifier accepted the answer``, ...
        billed: Sums over every ledger row of the run (failed attempts included).
        by_role: Billed sums per role.
        accepted_tokens: Tokens per role whose output was used.
        transfers: Budget moves made during the run, in order.
        state: The final graph state.
    """

    run_id: str
    thread_id: str
    answer: str
    answer_text: str
    score: float | None
    stop_reason: str
    billed: UsageTotals
    by_role: dict[str, UsageTotals]
    accepted_tokens: dict[str, int]
    transfers: list[Transfer]
    state: dict[str, Any] = field(repr=False)

    @property
    def waste_tokens(self) -> int:
        """Billed minus accepted tokens: failed attempts, discarded parses, cancelled work."""
        return self.billed.total_tokens - sum(self.accepted_tokens.values())

    @property
    def notes(self) -> list[str]:
        """Events worth knowing: fallbacks, failed branches, reallocations."""
        return list(self.state.get("notes", []))


def _bind(ctx: RunContext, run_id: str, thread_id: str) -> RunContext:
    """The context of one execution of a run: its client records through an account for
    the run (same ledger and prices, the context's budget)."""
    client = ctx.client.bind(run_id=run_id, thread_id=thread_id, budget=ctx.budget,
                             labels=ctx.labels)
    return replace(ctx, client=client)


@asynccontextmanager
async def _saver(checkpoint: Checkpoint) -> AsyncIterator[BaseCheckpointSaver[Any] | None]:
    if checkpoint is None or isinstance(checkpoint, BaseCheckpointSaver):
        yield checkpoint
        return
    async with sqlite_checkpointer(checkpoint) as saver:
        yield saver


def _result(ctx: RunContext, run_id: str, thread_id: str, values: Mapping[str, Any]) -> RunResult:
    account = ctx.account
    return RunResult(
        run_id=run_id,
        thread_id=thread_id,
        answer=str(values.get("answer", "")),
        answer_text=str(values.get("answer_text") or values.get("answer", "")),
        score=values.get("score"),
        stop_reason=str(values.get("stop_reason") or "done"),
        billed=account.totals(),
        by_role=account.by_role(),
        accepted_tokens=dict(values.get("accepted_tokens", {})),
        transfers=account.transfers(),
        state=dict(values),
    )


async def arun(
    graph: Pregel[Any, Any, Any, Any],
    task: str,
    *,
    context: RunContext,
    run_id: str | None = None,
    thread_id: str | None = None,
    task_id: str | None = None,
    checkpoint: Checkpoint = None,
    max_concurrency: int | None = None,
) -> RunResult:
    """Run ``task`` through a compiled topology; never raises for a budget running out.

    Args:
        graph: A topology from :mod:`stratagem.graphs` (or your own graph on
            :class:`RunState` with a :class:`RunContext` context schema).
        task: The task text.
        context: Client, budget, roles, verifier and policy for this run.
        run_id: The run's id (a fresh one if omitted).
        thread_id: The checkpoint thread (the run id if omitted).
        task_id: A stable id of the task, kept in state.
        checkpoint: An SQLite file path (or a saver) for a durable, resumable run.
        max_concurrency: Cap on parallel branches running at once.

    Raises:
        RunError: If the graph failed in a way the topology could not absorb; with a
            checkpoint, :func:`resume` can finish it.
    """
    ctx, inputs = _start(context, task, run_id, thread_id, task_id)
    return await _invoke(graph, inputs, ctx, run_id=inputs["run_id"],
                         thread_id=ctx.account.thread_id, checkpoint=checkpoint,
                         max_concurrency=max_concurrency)


def _start(context: RunContext, task: str, run_id: str | None, thread_id: str | None,
           task_id: str | None) -> tuple[RunContext, dict[str, Any]]:
    """A fresh run's bound context and graph inputs. A run id that already has rows (a
    rerun after a crash without a checkpoint) replays its recorded calls as they come, and
    what cannot replay is charged now."""
    run_id = run_id or uuid.uuid4().hex
    ctx = _bind(context, run_id, thread_id or run_id)
    if ctx.account.entries() or ctx.account.transfers():
        _log.info("run.rerun", run_id=run_id, rows=len(ctx.account.entries()))
        ctx.account.restore()
    return ctx, {"task": task, "task_id": task_id or run_id, "run_id": run_id}


def _run_config(thread_id: str, max_concurrency: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if max_concurrency is not None:
        config["max_concurrency"] = max_concurrency
    return config


async def aresume(
    graph: Pregel[Any, Any, Any, Any],
    thread_id: str,
    *,
    context: RunContext,
    checkpoint: Checkpoint,
    max_concurrency: int | None = None,
) -> RunResult:
    """Finish a run that crashed, from its last checkpoint.

    ``context`` must be built as for the original run, with a *fresh* budget of the same
    caps and a ledger that reads the same durable store: the budget is rebuilt from the run's
    ledger rows and transfers, so what was spent before the crash still counts, and the calls
    of unfinished nodes that the ledger holds are replayed rather than sent again.

    Raises:
        ConfigError: If there is no checkpoint for ``thread_id``.
    """
    async with _saver(checkpoint) as saver:
        if saver is None:
            raise ConfigError("resume needs the checkpoint the run was saved to")
        bound = graph.copy({"checkpointer": saver})
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
        snapshot = await bound.aget_state(config)  # type: ignore[arg-type]
        if not snapshot.values:
            raise ConfigError(
                f"no run with thread id {thread_id!r} in {checkpoint}: check the thread id "
                "and the checkpoint file"
            )
        run_id = str(snapshot.values.get("run_id") or thread_id)
        ctx = _bind(context, run_id, thread_id)
        ctx.account.restore(await _replays_on_resume(saver, config))
        if not snapshot.next and not snapshot.tasks:
            # Finished. (A run interrupted between supersteps has no `next` yet but still
            # has pending tasks: that one must run on.)
            return _result(ctx, run_id, thread_id, snapshot.values)
        _log.info("run.resume", run_id=run_id, thread_id=thread_id, next=list(snapshot.next))
        return await _invoke(graph, None, ctx, run_id=run_id, thread_id=thread_id,
                             checkpoint=saver, max_concurrency=max_concurrency)


async def _replays_on_resume(saver: BaseCheckpointSaver[Any], config: dict[str, Any]
                             ) -> Callable[[dict[str, Any]], bool]:
    """Which recorded outcomes a resume from the latest checkpoint replays: those of the
    superstep that runs again, except the tasks whose writes were saved (they do not run)."""
    saved = await saver.aget_tuple(config)  # type: ignore[arg-type]
    if saved is None:
        return lambda outcome: True
    step = int(saved.metadata.get("step", -1)) if saved.metadata else -1
    finished = {task for task, channel, _ in (saved.pending_writes or ())
                if channel not in _NOT_DONE}

    def replays(outcome: dict[str, Any]) -> bool:
        at = outcome.get("step")
        return at is not None and int(at) > step and outcome.get("task_id") not in finished

    return replays


async def _invoke(
    graph: Pregel[Any, Any, Any, Any],
    inputs: dict[str, Any] | None,
    ctx: RunContext,
    *,
    run_id: str,
    thread_id: str,
    checkpoint: Checkpoint,
    max_concurrency: int | None,
) -> RunResult:
    config = _run_config(thread_id, max_concurrency)
    with bind_run(run_id=run_id, thread_id=thread_id, **ctx.labels):
        async with _saver(checkpoint) as saver:
            bound = graph if saver is None else graph.copy({"checkpointer": saver})
            try:
                # durability only means something with a checkpointer (and LangGraph 1.2
                # fails on "sync" without one).
                invoke: Any = bound.ainvoke
                extra: dict[str, Any] = {"durability": "sync"} if saver is not None else {}
                values = await invoke(inputs, config, context=ctx, **extra)
            except StratagemError:
                raise  # ours already say what went wrong (a ConfigError stays the user's)
            except Exception as exc:
                raise RunError(
                    f"run {run_id} failed: {type(exc).__name__}: {exc}"
                    + (f" (resume it with thread id {thread_id!r})" if saver else "")
                ) from exc
    result = _result(ctx, run_id, thread_id, values)
    _log.info("run.end", run_id=run_id, stop_reason=result.stop_reason,
              billed_tokens=result.billed.total_tokens, waste_tokens=result.waste_tokens)
    return result


async def _closing(ctx: RunContext, work: Awaitable[RunResult]) -> RunResult:
    try:
        return await work
    finally:
        await ctx.client.aclose()


def run(graph: Pregel[Any, Any, Any, Any], task: str, **kwargs: Any) -> RunResult:
    """Blocking :func:`arun`, in an event loop of its own (its connections are closed at the
    end). In async code, or to share one client between concurrent runs, use :func:`arun`:
    it never closes the client, whose owner does that (``await client.aclose()``)."""
    return asyncio.run(_closing(kwargs["context"], arun(graph, task, **kwargs)))


def resume(graph: Pregel[Any, Any, Any, Any], thread_id: str, **kwargs: Any) -> RunResult:
    """Blocking :func:`aresume` (see :func:`run`)."""
    return asyncio.run(_closing(kwargs["context"], aresume(graph, thread_id, **kwargs)))
