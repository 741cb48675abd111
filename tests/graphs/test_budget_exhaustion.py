"""A budget running out mid-run ends the run gracefully, with the best answer so far.

Every case checks that no exception escapes, that the stop reason says why, and that the
budget was never overspent: with the in-process models the reported prompt tokens never
exceed the client's reserved estimate, so spend stays within every cap exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence

from stratagem.agents import (
    DECOMPOSER_PROMPT,
    JUDGE_POINTWISE_PROMPT,
    SOLVER_PROMPT,
    ChatRequest,
    Message,
    ModelClient,
)
from stratagem.budgets import Budget, JudgeFeedback
from stratagem.graphs import (
    RunContext,
    RunResult,
    best_of_n,
    decompose_solve,
    refine,
    run,
    single,
)
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"


def role_of(messages: Sequence[Message]) -> str:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    return {SOLVER_PROMPT.system: "solver", JUDGE_POINTWISE_PROMPT.system: "judge",
            DECOMPOSER_PROMPT.system: "decomposer"}.get(str(system), "unknown")


def within_caps(budget: Budget) -> None:
    """Nothing is held, and no scope spent more than its cap."""
    for name, scope in budget.snapshot().items():
        assert scope["reserved"] == 0, name
        if scope["limit"] is not None:
            assert scope["spent"] <= scope["limit"], name
    assert budget.overshoot_tokens == 0


def billed_matches_ledger(ctx: RunContext, result: RunResult) -> None:
    rows = ctx.client.ledger.entries(run_id=result.run_id)
    assert len(rows) == result.billed.calls
    assert sum(r.total_tokens for r in rows) == result.billed.total_tokens
    assert ctx.budget is not None and ctx.budget.spent() == result.billed.total_tokens


def test_refine_out_of_budget_keeps_the_best_judged_answer() -> None:
    revisions = {"n": 0}

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if role_of(messages) == "solver":
            revisions["n"] += 1
            return f"Try {revisions['n']}.\nAnswer: {40 + revisions['n']}"
        value = int(re.findall(r"Answer: (\d+)", str(messages[-1]["content"]))[-1])
        # Each revision scores better than the last, but never well enough to accept.
        return f"Better.\nSCORE: {(value - 40) / 10}\nVERDICT: reject"

    budget = Budget(total=600, roles={"solver": 300, "judge": 300})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget)
    result = run(refine(max_rounds=20), TASK, context=ctx)

    assert result.stop_reason.startswith("budget exhausted")
    verdicts = result.state["verdicts"]
    assert 1 <= len(verdicts) < 19  # it stopped well before max_rounds
    best = max(verdicts, key=lambda v: v["score"])
    assert result.answer == result.state["candidates"][best["index"]]["answer"]
    assert result.score == best["score"]
    within_caps(budget)
    billed_matches_ledger(ctx, result)
    assert all(r.status == "ok" for r in ctx.client.ledger.entries())


def test_best_of_n_later_round_that_does_not_fit_leaves_the_first_rounds_answer() -> None:
    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if role_of(messages) == "solver":
            return f"Answer: {40 + (request.seed or 0)}"
        return "Unsure.\nSCORE: 0.3\nVERDICT: reject"

    # Round one's four samples fit the solver's cap; the two extra samples the judge's low
    # score grants do not: each branch's allowance is below its prompt.
    budget = Budget(total=3_000, roles={"solver": 300, "judge": 1_500})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget,
                     policy=JudgeFeedback(threshold=0.5, extra_samples=2))
    result = run(best_of_n(4, select="judge", max_rounds=2), TASK, context=ctx)

    assert result.answer == "40"  # tied scores: the earliest round-one candidate
    assert len(result.state["candidates"]) == 4
    skipped = [n for n in result.notes if re.match(r"branch [45]: budget exhausted", n)]
    assert len(skipped) == 2
    rows = ctx.client.ledger.entries(run_id=result.run_id)
    assert sorted(r.branch or "" for r in rows if r.role == "solver") == ["0", "1", "2", "3"]
    within_caps(budget)
    billed_matches_ledger(ctx, result)


def test_fan_out_that_cannot_fit_one_branch_ends_without_calls() -> None:
    ctx = RunContext(client=ModelClient(FunctionModel(lambda m, r: "Answer: 42")),
                     budget=Budget(total=5_000, roles={"solver": 120, "judge": 1_000}))
    result = run(best_of_n(4, select="vote"), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("", "no candidate survived")
    assert len([n for n in result.notes if "budget exhausted" in n]) == 4
    assert result.billed.calls == 0 and len(ctx.client.ledger) == 0


def test_concurrent_judges_share_the_judge_budget_evenly() -> None:
    async def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if role_of(messages) == "solver":
            return f"Answer: {40 + (request.seed or 0)}"
        await asyncio.sleep(0.05)  # the judge calls overlap
        return "Good.\nSCORE: 0.9\nVERDICT: accept"

    # Enough for four verdicts split evenly: no call may take what its siblings need.
    budget = Budget(total=5_000, roles={"solver": 2_000, "judge": 480})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget)
    result = run(best_of_n(4, select="judge"), TASK, context=ctx)
    assert sorted(v["index"] for v in result.state["verdicts"]) == [0, 1, 2, 3]
    assert result.stop_reason == "done" and result.score == 0.9
    judge_rows = [r for r in ctx.client.ledger.entries() if r.role == "judge"]
    assert len(judge_rows) == 4 and all(r.total_tokens <= 120 for r in judge_rows)
    billed_matches_ledger(ctx, result)
    within_caps(budget)


def test_judge_budget_too_small_for_any_verdict_stops_gracefully() -> None:
    async def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if role_of(messages) == "solver":
            return f"Answer: {40 + (request.seed or 0)}"
        return "Good.\nSCORE: 0.9\nVERDICT: accept"

    # 300 judge tokens over four candidates: 75 each, less than one judge prompt.
    budget = Budget(total=5_000, roles={"solver": 2_000, "judge": 300})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget)
    result = run(best_of_n(4, select="judge"), TASK, context=ctx)
    assert result.stop_reason.startswith("budget exhausted")
    assert result.state.get("verdicts", []) == []
    assert result.answer == "40"  # no scores: the majority vote (first on ties) stands
    assert all(r.role == "solver" for r in ctx.client.ledger.entries())
    billed_matches_ledger(ctx, result)
    within_caps(budget)


def test_decompose_subtask_that_does_not_fit_stops_the_run() -> None:
    subtasks = [{"id": "1", "description": "short", "depends_on": []},
                {"id": "2", "description": "long " * 60, "depends_on": []},
                {"id": "3", "description": "short too", "depends_on": []}]

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if role_of(messages) == "decomposer":
            return json.dumps({"subtasks": subtasks})
        return "Answer: 7"

    budget = Budget(total=2_000, roles={"decomposer": 600, "solver": 400})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget)
    result = run(decompose_solve(), "Do three things.", context=ctx)
    assert result.stop_reason.startswith("budget exhausted: budget exceeded for role 'solver'")
    assert result.state["results"] == {"1": "7", "3": "7"}  # the branches that fit finished
    assert result.answer == ""
    within_caps(budget)
    billed_matches_ledger(ctx, result)


def test_no_room_for_a_single_call() -> None:
    ctx = RunContext(client=ModelClient(FunctionModel(lambda m, r: "Answer: 42")),
                     budget=Budget(total=30))
    result = run(single(), TASK, context=ctx)
    assert result.stop_reason.startswith("budget exhausted: budget exceeded for the run total")
    assert (result.answer, result.billed.calls) == ("", 0)


def test_extra_rounds_that_cannot_fit_stop_with_a_budget_reason() -> None:
    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if role_of(messages) == "solver":
            return "Answer: 41"
        return "Unsure.\nSCORE: 0.2\nVERDICT: reject"

    # Room for one round of two samples; the judge keeps asking for more.
    budget = Budget(total=10_000, roles={"solver": 260, "judge": 4_000})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget,
                     policy=JudgeFeedback(threshold=0.5, extra_samples=2, from_roles=()))
    result = run(best_of_n(2, select="judge", max_rounds=6), TASK, context=ctx)
    match = re.fullmatch(r"budget exhausted: no branch of sampling round (\d+) fit",
                         result.stop_reason)
    assert match is not None, result.stop_reason
    starved = int(match.group(1))
    assert 1 <= starved < 5 and result.state["round"] == starved  # no empty rounds after it
    assert result.answer == "41"
    solver_rows = sum(1 for e in ctx.client.ledger.entries() if e.role == "solver")
    assert solver_rows == 2 * starved  # two samples per round that fit, none after
    within_caps(budget)
