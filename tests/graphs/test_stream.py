"""Live events: astream yields node starts and ends, ledger rows, transfers, budget
thresholds and the run's end, in order, and composes with a user's own custom stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stratagem.agents import ChatRequest, Message, ModelClient
from stratagem.budgets import Budget, BudgetThreshold, CallRecorded, TokenLedger
from stratagem.graphs import (
    NodeFinished,
    NodeStarted,
    RunContext,
    RunStopped,
    astream,
    best_of_n,
    run,
    single,
    stream,
)
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"


def _model() -> FunctionModel:
    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        return "Answer: 42"

    return FunctionModel(respond)


def test_astream_yields_every_row_between_its_node_start_and_end() -> None:
    ledger = TokenLedger()
    ctx = RunContext(client=ModelClient(_model(), ledger=ledger),
                     budget=Budget(total=3000, roles={"solver": 2400, "judge": 600}))

    async def collect() -> list[Any]:
        return [e async for e in astream(best_of_n(3, select="vote"), TASK, context=ctx,
                                         run_id="s1")]

    events = asyncio.run(collect())
    rows = [e.entry for e in events if isinstance(e, CallRecorded)]
    assert rows == ledger.entries(run_id="s1") and len(rows) == 3
    started = {e.task_id for e in events if isinstance(e, NodeStarted)}
    finished = {e.task_id for e in events if isinstance(e, NodeFinished)}
    assert started == finished and {r.task_id for r in rows} <= started
    for row in rows:  # each row comes after its node started and before it finished
        at = next(i for i, e in enumerate(events) if isinstance(e, CallRecorded)
                  and e.entry.call_id == row.call_id)
        start = next(i for i, e in enumerate(events) if isinstance(e, NodeStarted)
                     and e.task_id == row.task_id)
        end = next(i for i, e in enumerate(events) if isinstance(e, NodeFinished)
                   and e.task_id == row.task_id)
        assert start < at < end
    last = events[-1]
    assert isinstance(last, RunStopped) and last.result.answer == "42"
    assert last.result.billed.total_tokens == sum(r.total_tokens for r in rows)


def test_budget_thresholds_are_events_once_each() -> None:
    # single() with this reply spends 64 tokens: past 80% of a 75-token total, not 100%
    reply = "Let us think it through step by step, six times seven. Answer: 42"
    ctx = RunContext(client=ModelClient(FunctionModel(lambda m, r: reply)),
                     budget=Budget(total=75))
    events = list(stream(single(), TASK, context=ctx))
    crossed = [(e.role, e.fraction) for e in events if isinstance(e, BudgetThreshold)]
    assert crossed == [(None, 0.8)]
    assert isinstance(events[-1], RunStopped)


def test_a_users_own_astream_gets_stratagem_rows_in_custom_mode() -> None:
    ctx = RunContext(client=ModelClient(_model()), budget=Budget(total=3000))
    graph = best_of_n(2, select="vote")

    async def collect() -> list[Any]:
        bound = ctx.client.bind(run_id="u1")
        from dataclasses import replace

        mine = replace(ctx, client=bound)
        return [chunk async for chunk in graph.astream(
            {"task": TASK, "task_id": "u1", "run_id": "u1"}, context=mine,
            stream_mode="custom")]

    chunks = asyncio.run(collect())
    assert [type(c) for c in chunks] == [CallRecorded, CallRecorded]
    # and a plain run is unaffected
    assert run(graph, TASK, context=ctx).answer == "42"
