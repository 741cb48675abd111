"""Live events of a run: ``astream`` yields what happens as it happens.

The account of a run writes each ledger row, transfer and budget threshold to LangGraph's
``custom`` stream mode (when the node that made the call runs under a streaming invocation),
so a user's own ``graph.astream(..., stream_mode="custom")`` receives them too; :func:`astream`
adds LangGraph's ``tasks`` mode for nodes starting and finishing, and ends with the run's
result::

    async for event in astream(best_of_n(4), "What is 6*7?", context=ctx):
        match event:
            case NodeStarted(node=n): ...
            case CallRecorded(entry=row): print(row.role, row.total_tokens)
            case BudgetThreshold(fraction=f): ...
            case RunStopped(result=r): print(r.answer, r.stop_reason)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

from langgraph.pregel import Pregel

from stratagem.budgets import BudgetThreshold, CallRecorded, TransferRecorded
from stratagem.errors import RunError, StratagemError
from stratagem.graphs._context import RunContext
from stratagem.graphs._run import (
    Checkpoint,
    RunResult,
    _result,
    _run_config,
    _saver,
    _start,
)
from stratagem.logging import bind_run

__all__ = ["CustomEvent", "NodeFinished", "NodeStarted", "RunEvent", "RunStopped", "astream",
           "stream"]


@dataclass(frozen=True, slots=True)
class NodeStarted:
    """A graph node (a LangGraph task) started."""

    node: str
    task_id: str
    kind: str = "node_started"


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """A graph node finished (``error`` set if it raised)."""

    node: str
    task_id: str
    error: str | None = None
    kind: str = "node_finished"


@dataclass(frozen=True, slots=True)
class CustomEvent:
    """Something a node wrote to LangGraph's custom stream itself."""

    payload: Any
    kind: str = "custom"


@dataclass(frozen=True, slots=True)
class RunStopped:
    """The run ended: its result (``result.stop_reason`` says why)."""

    result: RunResult
    kind: str = "run_stopped"

    @property
    def stop_reason(self) -> str:
        """Why the run ended."""
        return self.result.stop_reason


RunEvent = (NodeStarted | NodeFinished | CallRecorded | TransferRecorded | BudgetThreshold
            | CustomEvent | RunStopped)
"""What :func:`astream` yields, in the order it happened."""


async def astream(
    graph: Pregel[Any, Any, Any, Any],
    task: str,
    *,
    context: RunContext,
    run_id: str | None = None,
    thread_id: str | None = None,
    task_id: str | None = None,
    checkpoint: Checkpoint = None,
    max_concurrency: int | None = None,
) -> AsyncGenerator[RunEvent, None]:
    """Run ``task`` like :func:`~stratagem.graphs.arun`, yielding its events as they happen;
    the last one is :class:`RunStopped` with the result.

    Raises:
        RunError: If the graph failed in a way the topology could not absorb.
    """
    ctx, inputs = _start(context, task, run_id, thread_id, task_id)
    run_id, thread_id = inputs["run_id"], ctx.account.thread_id
    config = _run_config(thread_id, max_concurrency)
    values: dict[str, Any] = {}
    with bind_run(run_id=run_id, thread_id=thread_id, **ctx.labels):
        async with _saver(checkpoint) as saver:
            bound = graph if saver is None else graph.copy({"checkpointer": saver})
            extra: dict[str, Any] = {"durability": "sync"} if saver is not None else {}
            streaming: Any = bound.astream
            try:
                async for mode, chunk in streaming(inputs, config, context=ctx,
                                                   stream_mode=["tasks", "custom", "values"],
                                                   **extra):
                    if mode == "values":
                        values = dict(chunk)
                    elif mode == "tasks":
                        if "result" in chunk or "error" in chunk:
                            error = chunk.get("error")
                            yield NodeFinished(str(chunk.get("name")), str(chunk.get("id")),
                                               None if error is None else str(error))
                        else:
                            yield NodeStarted(str(chunk.get("name")), str(chunk.get("id")))
                    elif isinstance(chunk, CallRecorded | TransferRecorded | BudgetThreshold):
                        yield chunk
                    else:
                        yield CustomEvent(chunk)
            except StratagemError:
                raise
            except Exception as exc:
                raise RunError(f"run {run_id} failed: {type(exc).__name__}: {exc}") from exc
    yield RunStopped(_result(ctx, run_id, thread_id, values))


def stream(graph: Pregel[Any, Any, Any, Any], task: str, **kwargs: Any) -> Iterator[RunEvent]:
    """Blocking :func:`astream`, in an event loop of its own (closed, with the client's
    connections, at the end). Not inside a running loop: use :func:`astream` there."""
    loop = asyncio.new_event_loop()
    events = astream(graph, task, **kwargs)
    try:
        while True:
            try:
                yield loop.run_until_complete(events.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(events.aclose())
        loop.run_until_complete(kwargs["context"].client.aclose())
        loop.close()
