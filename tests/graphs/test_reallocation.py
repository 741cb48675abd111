"""Budget moves mid-run: judge feedback and the planner's split, as ledger Transfer events.

Each move must be in the ledger with its reason, carry exactly the tokens the policy
promised, match the ``budget_moves`` deltas in state, and actually change the caps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from stratagem.agents import (
    JUDGE_POINTWISE_PROMPT,
    PLANNER_PROMPT,
    SOLVER_PROMPT,
    ChatRequest,
    Message,
    ModelClient,
)
from stratagem.budgets import Budget, JudgeFeedback, Transfer
from stratagem.graphs import RunContext, RunResult, adaptive, best_of_n, run
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"
CAPS = {"planner": 1_000, "decomposer": 500, "solver": 6_000, "judge": 4_000}


def role_of(messages: Sequence[Message]) -> str:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    return {PLANNER_PROMPT.system: "planner", SOLVER_PROMPT.system: "solver",
            JUDGE_POINTWISE_PROMPT.system: "judge"}.get(str(system), "unknown")


def model(*, score: float, plan: str = "") -> FunctionModel:
    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        role = role_of(messages)
        if role == "planner":
            return plan
        if role == "solver":
            return f"Answer: {40 + (request.seed or 0)}"
        assert role == "judge"
        return f"Hard to say.\nSCORE: {score}\nVERDICT: reject"

    return FunctionModel(respond)


def moves_of(transfers: Sequence[Transfer]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in transfers:
        out[t.from_role] = out.get(t.from_role, 0) - t.tokens
        out[t.to_role] = out.get(t.to_role, 0) + t.tokens
    return out


def check_transfers_recorded(ctx: RunContext, result: RunResult) -> None:
    """The result, the ledger and the state agree on every move."""
    assert result.transfers == ctx.client.ledger.transfers(result.run_id)
    assert all(t.run_id == result.run_id for t in result.transfers)
    nonzero = {k: v for k, v in result.state.get("budget_moves", {}).items() if v}
    assert nonzero == {k: v for k, v in moves_of(result.transfers).items() if v}


def test_low_judge_scores_move_unspent_budget_to_the_solver() -> None:
    budget = Budget(total=20_000, roles=CAPS)
    ctx = RunContext(client=ModelClient(model(score=0.3)), budget=budget,
                     policy=JudgeFeedback(threshold=0.5, extra_samples=2))
    result = run(best_of_n(2, select="judge", max_rounds=3), TASK, context=ctx)

    # Round one's low score moves all of the (unused) planner and decomposer caps.
    first = [(t.from_role, t.to_role, t.tokens) for t in result.transfers]
    assert first == [("planner", "solver", 1_000), ("decomposer", "solver", 500)]
    assert all("< 0.5" in t.reason and t.node == "feedback" for t in result.transfers)
    assert all(t.reason == "judge confidence 0.30 < 0.5" for t in result.transfers)
    check_transfers_recorded(ctx, result)
    assert result.state["budget_moves"] == {"planner": -1_000, "decomposer": -500,
                                            "solver": 1_500}
    assert (budget.limit("planner"), budget.limit("decomposer")) == (0, 0)
    assert budget.limit("solver") == 7_500
    assert budget.limit() == 20_000  # transfers never change the run total

    # Extra samples were drawn: two per low-scored round, for rounds two and three.
    rows = ctx.client.ledger.entries(run_id=result.run_id)
    assert sorted(int(e.branch or -1) for e in rows if e.role == "solver") == list(range(6))
    assert sum(1 for e in rows if e.role == "judge") == 6
    assert len(result.state["candidates"]) == 6
    assert sum(n == "judge_feedback: judge confidence 0.30 < 0.5" for n in result.notes) == 2
    assert "moved 1000 tokens planner->solver, moved 500 tokens decomposer->solver" \
        in result.notes


def test_confident_judge_moves_nothing() -> None:
    budget = Budget(total=20_000, roles=CAPS)
    ctx = RunContext(client=ModelClient(model(score=0.8)), budget=budget,
                     policy=JudgeFeedback(threshold=0.5))
    result = run(best_of_n(2, select="judge", max_rounds=3), TASK, context=ctx)
    assert result.transfers == [] and ctx.client.ledger.transfers() == []
    assert len(result.state["candidates"]) == 2
    assert budget.limit("solver") == CAPS["solver"]


def test_transfer_amounts_are_what_was_unspent() -> None:
    plan = json.dumps({"mode": "parallel", "samples": 2, "rounds": 1, "difficulty": 0.5,
                       "budget_split": {"solver": 0.6, "judge": 0.4}, "rationale": "try twice"})
    budget = Budget(total=20_000, roles={"planner": 1_000, "decomposer": 500,
                                         "solver": 6_000, "judge": 4_000})
    ctx = RunContext(client=ModelClient(model(score=0.2, plan=plan)), budget=budget,
                     policy=JudgeFeedback(threshold=0.5, extra_samples=1))
    result = run(adaptive(max_rounds=2), TASK, context=ctx)

    planner_spent = result.by_role["planner"].total_tokens
    assert planner_spent > 0
    # Parallel mode does not use the decomposer: the plan moves its 500 tokens to the roles
    # it does use, so the judge's feedback only finds the planner's leftovers to move.
    at_plan = [t for t in result.transfers if t.node == "plan"]
    assert sum(t.tokens for t in at_plan if t.from_role == "decomposer") == 500
    feedback = [t for t in result.transfers if t.node == "feedback"]
    assert [(t.from_role, t.to_role, t.tokens) for t in feedback] == [
        ("planner", "solver", 1_000 - planner_spent)]
    assert all(t.reason == "judge confidence 0.20 < 0.5" for t in feedback)
    check_transfers_recorded(ctx, result)
    assert budget.limit("planner") == planner_spent and budget.unspent("planner") == 0
    rows = ctx.client.ledger.entries(run_id=result.run_id)
    assert sum(1 for e in rows if e.role == "solver") == 3  # two planned, one granted


def test_verifier_acceptance_stops_early() -> None:
    ctx = RunContext(client=ModelClient(model(score=0.0)), budget=Budget(20_000, CAPS),
                     verifier=lambda text: "Answer: 4" in text,
                     policy=JudgeFeedback(threshold=0.5))
    result = run(best_of_n(2, select="verifier", max_rounds=3), TASK, context=ctx)
    assert result.stop_reason == "verifier accepted the answer"
    assert (result.answer, result.score) == ("40", 1.0)
    assert result.transfers == []
    rows = ctx.client.ledger.entries(run_id=result.run_id)
    assert [e.role for e in rows] == ["solver", "solver"]  # no judge tokens, no extra round


def test_verifier_rejection_reallocates_then_acceptance_stops() -> None:
    # Seeds 0 and 1 answer 40 and 41 (rejected); the granted samples 2 and 3 answer 42.
    budget = Budget(20_000, CAPS)
    ctx = RunContext(client=ModelClient(model(score=0.0)), budget=budget,
                     verifier=lambda text: "Answer: 42" in text,
                     policy=JudgeFeedback(threshold=0.5, extra_samples=2))
    result = run(best_of_n(2, select="verifier", max_rounds=4), TASK, context=ctx)
    assert result.stop_reason == "verifier accepted the answer"
    assert (result.answer, result.score) == ("42", 1.0)
    assert [(t.from_role, t.tokens) for t in result.transfers] == [
        ("planner", 1_000), ("decomposer", 500)]
    assert all("< 0.5" in t.reason for t in result.transfers)
    check_transfers_recorded(ctx, result)
    assert len(result.state["candidates"]) == 4  # one extra round, then it stopped
    assert budget.limit("solver") == CAPS["solver"] + 1_500


def test_planner_split_moves_budget_with_its_reason() -> None:
    plan = json.dumps({"mode": "parallel", "samples": 2, "rounds": 1, "difficulty": 0.5,
                       "budget_split": {"solver": 0.5, "judge": 0.5}, "rationale": "even"})
    budget = Budget(total=20_000, roles={"planner": 1_000, "solver": 6_000, "judge": 2_000})
    ctx = RunContext(client=ModelClient(model(score=0.9, plan=plan)), budget=budget)
    result = run(adaptive(), TASK, context=ctx)

    assert [(t.from_role, t.to_role, t.tokens, t.reason, t.node) for t in result.transfers] == [
        ("solver", "judge", 2_000, "planner split for mode parallel", "plan")]
    check_transfers_recorded(ctx, result)
    assert result.state["budget_moves"] == {"solver": -2_000, "judge": 2_000}
    assert budget.limit("solver") == budget.limit("judge") == 4_000
