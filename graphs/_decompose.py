"""``decompose_solve``: a decomposer splits the task; solvers work the subtasks (a Send
fan-out for independent ones, a chain where they depend on each other); an aggregation step
combines the results."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.agents import SubtaskDict
from stratagem.errors import BudgetExceeded, ConfigError, OutputParseError
from stratagem.graphs._common import (
    accepted,
    finalize_node,
    run_context,
    skip_role,
    stratagem_node,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node
from stratagem.graphs._state import BranchInput, RunState

__all__ = ["add_decomposition", "decompose_solve"]


@stratagem_node
async def decompose(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """Ask the decomposer for subtasks; an unusable decomposition means one subtask."""
    try:
        parts = await ctx.decomposer.decompose(ctx.client, state["task"], node="decompose",
                                               **ctx.extra())
    except (OutputParseError, BudgetExceeded) as exc:
        why = "out of budget" if isinstance(exc, BudgetExceeded) else "output unusable"
        whole = SubtaskDict(id="1", description=state["task"], depends_on=[])
        return {"subtasks": [whole],
                **skip_role(ctx, "decomposer", f"{why}: {exc}", node="decompose")}
    subtasks = [s.as_dict() for s in parts.order()]
    return {"subtasks": subtasks, **accepted(parts)}


def schedule(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
    """Send every subtask whose dependencies are done; aggregate when none is left."""
    if state.get("stop_reason"):
        return "finalize"
    ctx = run_context(runtime)
    done = state.get("results", {})
    subtasks = state.get("subtasks", [])
    by_id = {s["id"]: s for s in subtasks}
    ready = [s for s in subtasks if s["id"] not in done
             and all(d in done for d in s.get("depends_on", []))]
    if not ready:
        return "aggregate"
    budget = ctx.budget
    left = None if budget is None else budget.remaining("solver")
    # Keep a share back for the aggregation step: it needs one more solver call.
    pending = sum(1 for s in subtasks if s["id"] not in done) + 1
    allowance = None if left is None else max(1, left // pending)
    sends = []
    for s in ready:
        prior = [(by_id[d]["description"], done[d]) for d in s.get("depends_on", [])]
        payload: BranchInput = {"task": s["description"], "branch": s["id"], "subtask_id": s["id"],
                                "prior_steps": prior, "allowance": allowance,
                                "seed": ctx.seed, "temperature": ctx.temperature}
        sends.append(Send("subtask", payload))
    return sends


@stratagem_node
async def subtask(inp: BranchInput, ctx: RunContext) -> dict[str, Any]:
    """Solve one subtask, given the results of the subtasks it depends on."""
    solution = await ctx.solver.solve(
        ctx.client, inp["task"], prior_steps=inp.get("prior_steps", []), node="subtask",
        branch=inp["branch"], seed=inp.get("seed"), temperature=inp.get("temperature"),
        allowance=inp.get("allowance"),
        **ctx.extra(),
    )
    return {"results": {inp["subtask_id"]: solution.answer},
            **accepted(solution)}


@stratagem_node
async def aggregate(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """Answer the original task from the subtask results, in order."""
    done = state.get("results", {})
    steps = [(s["description"], done[s["id"]]) for s in state.get("subtasks", [])
             if s["id"] in done]
    solution = await ctx.solver.solve(ctx.client, state["task"], prior_steps=steps,
                                      node="aggregate", seed=ctx.seed,
                                      temperature=ctx.temperature, **ctx.extra())
    return {"candidates": [{"answer": solution.answer, "text": solution.text,
                            "branch": "aggregate", "round": 0}],
            **accepted(solution)}


def add_decomposition(
    g: Builder, entry: str = "decompose"
) -> None:
    """Add the decompose -> subtasks -> aggregate nodes to ``g`` (ending at ``finalize``)."""
    add_node(g, entry, decompose)
    add_node(g, "subtask", subtask)
    add_node(g, "schedule", lambda state: {})
    add_node(g, "aggregate", aggregate)
    g.add_edge(entry, "schedule")
    g.add_edge("subtask", "schedule")
    g.add_conditional_edges("schedule", schedule, ["subtask", "aggregate", "finalize"])
    g.add_edge("aggregate", "finalize")


def decompose_solve(
    *, max_subtasks: int = 8, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> Compiled:
    """Decomposer, then solvers over the subtasks in dependency order, then aggregation.

    ``max_subtasks`` bounds the chain length (and so the recursion limit); the decomposer's
    own limit should match it.
    """
    if max_subtasks < 1:
        raise ConfigError(f"max_subtasks must be >= 1, got {max_subtasks}")
    g: Builder = StateGraph(
        RunState, context_schema=RunContext)
    add_decomposition(g)
    add_node(g, "finalize", finalize_node)
    g.add_edge(START, "decompose")
    g.add_edge("finalize", END)
    return _compile(g, checkpointer, recursion_limit=2 * max(max_subtasks, 16) + 6)
