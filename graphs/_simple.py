"""``single`` (solver only) and ``plan_solve`` (planner, then solver)."""

from __future__ import annotations

from typing import Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from stratagem.agents import PlanDict
from stratagem.errors import BudgetExceeded, OutputParseError
from stratagem.graphs._common import (
    accepted,
    finalize_node,
    route_unless_stopped,
    skip_role,
    stratagem_node,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._state import RunState

__all__ = ["plan_solve", "single"]

Compiled = CompiledStateGraph[RunState, RunContext, RunState, RunState]


@stratagem_node
async def solve(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """Solve the task once (with the plan's rationale as a hint, if a planner ran)."""
    plan = state.get("plan") or {}
    hint = plan.get("rationale") if plan else None
    solution = await ctx.solver.solve(
        ctx.client, state["task"], feedback=f"Plan: {hint}" if hint else None,
        node="solve", seed=ctx.seed, temperature=ctx.temperature, **ctx.extra(),
    )
    return {
        "candidates": [{"answer": solution.answer, "text": solution.text, "branch": "0",
                        "score": None, "round": 0}],
        **accepted(solution),
    }


@stratagem_node
async def plan(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """Ask the planner for a strategy; an unparseable plan falls back to a direct solve."""
    budget = ctx.budget
    try:
        decided = await ctx.planner.plan(
            ctx.client, state["task"], roles_available=("planner", "solver"),
            budget_tokens=None if budget is None else budget.remaining(), node="plan",
            **ctx.extra(),
        )
    except (OutputParseError, BudgetExceeded) as exc:
        why = "out of budget" if isinstance(exc, BudgetExceeded) else "output unusable"
        skipped: PlanDict = {"mode": "direct", "rationale": ""}
        return {"plan": skipped,
                **skip_role(ctx, "planner", f"{why}: {exc}", node="plan")}
    return {"plan": decided.as_dict(), **accepted(decided)}


Builder = StateGraph[RunState, RunContext, RunState, RunState]


def add_node(g: Builder, name: str, fn: Any) -> None:
    """``g.add_node(name, fn)``. LangGraph's node Protocols do not match an async function
    taking ``(state, runtime)`` under mypy's strict checking, though LangGraph runs it fine."""
    g.add_node(name, cast(Any, fn))


def _compile(
    builder: StateGraph[RunState, RunContext, RunState, RunState],
    checkpointer: BaseCheckpointSaver[Any] | None,
    recursion_limit: int,
) -> Compiled:
    graph = builder.compile(checkpointer=checkpointer)
    return graph.with_config(recursion_limit=recursion_limit)


def single(*, checkpointer: BaseCheckpointSaver[Any] | None = None) -> Compiled:
    """One solver call: the baseline every other topology is compared against."""
    g: StateGraph[RunState, RunContext, RunState, RunState] = StateGraph(
        RunState, context_schema=RunContext)
    add_node(g, "solve", solve)
    add_node(g, "finalize", finalize_node)
    g.add_edge(START, "solve")
    g.add_edge("solve", "finalize")
    g.add_edge("finalize", END)
    return _compile(g, checkpointer, recursion_limit=4)


def plan_solve(*, checkpointer: BaseCheckpointSaver[Any] | None = None) -> Compiled:
    """A planner reads the task first; the solver gets its plan."""
    g: StateGraph[RunState, RunContext, RunState, RunState] = StateGraph(
        RunState, context_schema=RunContext)
    add_node(g, "plan", plan)
    add_node(g, "solve", solve)
    add_node(g, "finalize", finalize_node)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", route_unless_stopped("solve"), ["solve", "finalize"])
    g.add_edge("solve", "finalize")
    g.add_edge("finalize", END)
    return _compile(g, checkpointer, recursion_limit=5)
