"""Executing a run again replays its recorded calls: the same path, each row counted once.

A durable resume re-runs an unfinished node from its start; the calls that node made before
the crash are in the ledger with their replies, so they are replayed, not sent again. A rerun
without checkpoints (the same run id, from the start) replays every recorded call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from stratagem.agents import ChatRequest, Message, ModelClient
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.errors import RunError
from stratagem.graphs import (
    RunContext,
    RunState,
    accepted,
    best_of_n,
    refine,
    resume,
    run,
    stratagem_node,
)
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"


def _budget() -> Budget:
    return Budget(total=4000, roles={"solver": 3000, "judge": 1000})


def test_a_rerun_of_the_same_run_id_replays_every_call_and_adds_no_row() -> None:
    sent: list[int | None] = []

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        sent.append(request.seed)
        return f"Answer: {40 + (request.seed or 0) % 3}"

    model = FunctionModel(respond)
    ledger = TokenLedger()
    graph = best_of_n(4, select="vote")
    first = run(graph, TASK, run_id="r1", context=RunContext(
        client=ModelClient(model, ledger=ledger), budget=_budget()))
    calls = len(sent)
    again_budget = _budget()
    again = run(graph, TASK, run_id="r1", context=RunContext(
        client=ModelClient(model, ledger=ledger), budget=again_budget))
    assert len(sent) == calls, "a recorded call was sent again"
    assert (again.answer, again.stop_reason) == (first.answer, first.stop_reason)
    assert again.billed == first.billed and len(ledger) == calls  # counted once
    assert again_budget.spent() == first.billed.total_tokens  # charged as it was then
    assert again.accepted_tokens == first.accepted_tokens


def test_transfers_are_not_recorded_twice_by_a_rerun() -> None:
    verdicts = iter(["SCORE: 0.2", "SCORE: 0.9"] * 4)

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if request.role == "judge":
            return next(verdicts)
        return "Answer: 42"

    from stratagem.budgets import JudgeFeedback

    ledger = TokenLedger()
    budget = Budget(total=6000, roles={"planner": 500, "solver": 4000, "judge": 1500})
    ctx = RunContext(client=ModelClient(FunctionModel(respond), ledger=ledger), budget=budget,
                     policy=JudgeFeedback(threshold=0.5, from_roles=("planner",)))
    graph = refine(max_rounds=3)
    first = run(graph, TASK, run_id="r2", context=ctx)
    assert first.transfers, "the low score should have moved budget"
    again = run(graph, TASK, run_id="r2", context=RunContext(
        client=ModelClient(FunctionModel(respond), ledger=ledger),
        budget=Budget(total=6000, roles={"planner": 500, "solver": 4000, "judge": 1500}),
        policy=JudgeFeedback(threshold=0.5, from_roles=("planner",))))
    assert again.transfers == first.transfers and len(ledger.transfers()) == len(first.transfers)
    assert again.answer == first.answer


@stratagem_node
async def two_calls(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """Two calls in one node; the second one fails the first time (a crash mid-node)."""
    one = await ctx.client.complete([{"role": "user", "content": "first"}], role="solver")
    two = await ctx.client.complete([{"role": "user", "content": "second"}], role="critic")
    return {"answer": f"{one.text}|{two.text}", **accepted(one, two)}


def _two_call_graph() -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(RunState, context_schema=RunContext)
    builder.add_node("two_calls", two_calls)
    builder.add_edge(START, "two_calls")
    builder.add_edge("two_calls", END)
    return builder.compile()


def test_a_resume_replays_the_calls_of_the_node_that_did_not_finish(tmp_path: Path) -> None:
    sent: list[str] = []
    crash = [True]

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        text = str(messages[-1]["content"])
        if text == "second" and crash:
            crash.clear()
            raise RuntimeError("the process went away")
        sent.append(text)
        return f"reply to {text}"

    model = FunctionModel(respond)
    ledger_path, ckpt = tmp_path / "ledger.sqlite", tmp_path / "ckpt.sqlite"
    graph = _two_call_graph()
    with LedgerStore(ledger_path) as store:
        ctx = RunContext(client=ModelClient(model, ledger=TokenLedger(store)),
                         budget=Budget(total=2000))
        with pytest.raises(RunError):
            run(graph, TASK, run_id="r3", thread_id="t3", context=ctx, checkpoint=ckpt)
    assert sent == ["first"]
    with LedgerStore(ledger_path) as store:
        budget = Budget(total=2000)
        ctx = RunContext(client=ModelClient(model, ledger=TokenLedger(store)), budget=budget)
        result = resume(graph, "t3", context=ctx, checkpoint=ckpt)
        rows = store.entries(run_id="r3")
    assert sent == ["first", "second"], "the first call was asked again"
    assert result.answer == "reply to first|reply to second"
    # every row once: the first call, the failed attempt of the second, its retry
    ok = [r for r in rows if r.status == "ok"]
    assert [r.role for r in ok] == ["solver", "critic"]
    assert budget.spent() == sum(r.total_tokens for r in rows)
    assert result.billed.total_tokens == budget.spent()
    assert set(result.accepted_tokens) == {"solver", "critic"}


def test_different_run_ids_do_not_replay_each_other() -> None:
    sent: list[str] = []

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        sent.append(request.role)
        return "Answer: 7"

    ledger = TokenLedger()
    graph = best_of_n(2, select="vote")
    for run_id in ("a", "b"):
        run(graph, TASK, run_id=run_id, context=RunContext(
            client=ModelClient(FunctionModel(respond), ledger=ledger), budget=_budget()))
    assert len(sent) == 4  # two samples per run, each sent
    assert ledger.totals(run_id="a").calls == ledger.totals(run_id="b").calls == 2
