"""``adaptive``: the planner reads the task and picks the mode and the budget split.

* ``direct``: one solver call.
* ``decompose``: decomposer, subtask solvers, aggregation (compositional tasks).
* ``parallel``: ``samples`` parallel solvers and judge selection (independent short problems);
  a reallocation policy may grant more samples when the judge is unsure.
* ``sequential``: solve, critique, revise for ``rounds`` rounds (long chains of reasoning).

The plan's budget split is applied as transfers between the roles' caps (each a ledger event
with its reason); judge feedback moves budget again mid-run through the context's policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.agents import Plan
from stratagem.budgets import BudgetView, Transfer, apportion
from stratagem.errors import BudgetExceeded, ConfigError, OutputParseError
from stratagem.graphs._common import (
    accepted,
    finalize_node,
    run_context,
    skip_role,
    stratagem_node,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._decompose import add_decomposition
from stratagem.graphs._fanout import fan_out, sample, select_node
from stratagem.graphs._loops import feedback_update, refine_nodes, round_starved
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node, solve
from stratagem.graphs._state import RunState

__all__ = ["adaptive", "apply_split"]

_ROLES = ("decomposer", "solver", "judge")
_MODE_ROLES = {
    "direct": ("solver",),
    "parallel": ("solver", "judge"),
    "sequential": ("solver", "judge"),
    "decompose": ("decomposer", "solver"),
}
"""The roles each mode actually uses; the others' budget is moved to those that do."""


def apply_split(budget: BudgetView, split: Mapping[str, float], *, node: str,
                reason: str) -> list[Transfer]:
    """Move unspent budget between capped roles so their caps follow ``split``.

    Only what is unspent can move; roles without a cap are left alone. Returns the transfers
    made (each recorded in the ledger when ``budget`` is the run's account).
    """
    roles = [r for r in split if budget.unspent(r) is not None]
    if len(roles) < 2:
        return []
    unspent = {r: budget.unspent(r) or 0 for r in roles}
    targets = dict(zip(roles, apportion([split[r] for r in roles], sum(unspent.values())),
                       strict=True))
    give = {r: unspent[r] - targets[r] for r in roles if unspent[r] > targets[r]}
    take = {r: targets[r] - unspent[r] for r in roles if targets[r] > unspent[r]}
    moves = []
    for src in sorted(give):
        for dst in sorted(take):
            n = min(give[src], take[dst])
            if n > 0:
                moves.append(budget.transfer(src, dst, n, reason, node=node))
                give[src] -= n
                take[dst] -= n
    return moves


def adaptive(
    *,
    max_samples: int = 8,
    max_rounds: int = 4,
    judge_with: str = "llm",
    accept_threshold: float = 0.7,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """The planner chooses direct, decompose, parallel or sequential, and the budget split.

    Args:
        max_samples: Cap on the planner's ``samples`` (and on extra samples granted).
        max_rounds: Cap on the planner's ``rounds``.
        judge_with: ``llm`` or ``verifier`` for selection and critique.
        accept_threshold: Judge score at which an answer is accepted.
        checkpointer: Saves every step, for durable runs.
    """
    if max_samples < 1 or max_rounds < 1:
        raise ConfigError("adaptive needs max_samples >= 1 and max_rounds >= 1")
    if judge_with not in ("llm", "verifier"):
        raise ConfigError(f"judge_with must be 'llm' or 'verifier', got {judge_with!r}")
    rsolve, rjudge = refine_nodes(max_rounds, judge_with, accept_threshold)

    @stratagem_node
    async def plan(state: RunState, ctx: RunContext) -> dict[str, Any]:
        budget = ctx.budget
        try:
            decided = await ctx.planner.plan(
                ctx.client, state["task"], roles_available=_ROLES,
                budget_tokens=None if budget is None else budget.remaining(), node="plan",
                **ctx.extra(),
            )
        except (OutputParseError, BudgetExceeded) as exc:
            why = "out of budget" if isinstance(exc, BudgetExceeded) else "output unusable"
            return {"plan": Plan().as_dict(),
                    **skip_role(ctx, "planner", f"{why}: {exc}", node="plan")}
        chosen = decided.as_dict()
        chosen["samples"] = min(decided.samples, max_samples)
        chosen["rounds"] = min(decided.rounds, max_rounds)
        update: dict[str, Any] = {"plan": chosen,
                                  **accepted(decided)}
        if budget is not None:
            used = _MODE_ROLES.get(decided.mode, ("solver",))
            split = {r: decided.budget_split.get(r, 0.0) for r in used}
            if sum(split.values()) <= 0:  # no usable preference: keep the current ratio
                split = {r: float(budget.unspent(r) or 0) for r in used}
            split.update({r: 0.0 for r in _ROLES if r not in used})
            moves = apply_split(ctx.account, split, node="plan",
                                reason=f"planner split for mode {decided.mode}")
            deltas: dict[str, int] = {}
            for t in moves:
                deltas[t.from_role] = deltas.get(t.from_role, 0) - t.tokens
                deltas[t.to_role] = deltas.get(t.to_role, 0) + t.tokens
            update["budget_moves"] = deltas
        return update

    def route(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason"):
            return "finalize"
        chosen = state.get("plan") or {}
        mode = chosen.get("mode", "direct")
        if mode == "decompose":
            return "decompose"
        if mode == "parallel":
            return fan_out(state, run_context(runtime), int(chosen.get("samples", 1)))
        if mode == "sequential":
            return "rsolve"
        return "solve"

    @stratagem_node
    async def feedback(state: RunState, ctx: RunContext) -> dict[str, Any]:
        if state.get("round", 0) + 1 >= max_rounds:
            return {"extra_samples": 0}
        starved = round_starved(state)
        if starved is not None:
            return starved
        update = feedback_update(state, ctx, judge_with=judge_with, node="feedback",
                                 accept_threshold=accept_threshold)
        if update.get("extra_samples"):
            update["extra_samples"] = min(update["extra_samples"], max_samples)
            update["round"] = state.get("round", 0) + 1
        return update

    def more(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason") or not state.get("extra_samples"):
            return "finalize"
        return fan_out(state, run_context(runtime), int(state["extra_samples"]))

    def after_rsolve(state: RunState) -> str:
        return "finalize" if state.get("stop_reason") else "rjudge"

    def after_rjudge(state: RunState) -> str:
        plan_rounds = int((state.get("plan") or {}).get("rounds", max_rounds))
        if state.get("stop_reason") or state.get("round", 0) >= plan_rounds:
            return "finalize"
        return "rsolve"

    g: Builder = StateGraph(
        RunState, context_schema=RunContext)
    add_node(g, "plan", plan)
    add_node(g, "solve", solve)
    add_decomposition(g)
    add_node(g, "sample", sample)
    add_node(g, "select", select_node("verifier" if judge_with == "verifier" else "judge"))
    add_node(g, "feedback", feedback)
    add_node(g, "rsolve", rsolve)
    add_node(g, "rjudge", rjudge)
    add_node(g, "finalize", finalize_node)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", route,
                            ["solve", "decompose", "sample", "rsolve", "finalize"])
    g.add_edge("solve", "finalize")
    g.add_edge("sample", "select")
    g.add_edge("select", "feedback")
    g.add_conditional_edges("feedback", more, ["sample", "finalize"])
    g.add_conditional_edges("rsolve", after_rsolve, ["rjudge", "finalize"])
    g.add_conditional_edges("rjudge", after_rjudge, ["rsolve", "finalize"])
    g.add_edge("finalize", END)
    limit = max(2 * max_rounds, 3 * max_rounds, 2 * 16) + 8
    return _compile(g, checkpointer, recursion_limit=limit)
