"""Your own LangGraph graph, with stratagem's roles and ledger attribution for free.

The graph below is plain LangGraph: a ``StateGraph`` over stratagem's :class:`RunState` with
:class:`RunContext` as its runtime context. It mixes three kinds of node:

* ``solve``: stratagem's solver role, made a node with :func:`stratagem_node`;
* ``format_check``: pure Python, no model call (is the answer a number?);
* ``critic``: a role of your own, calling the model through ``ctx.client`` as ``"critic"``.

Because every call goes through the run's client, each one is budgeted and lands in the
ledger under its role, node and run id; nothing else is needed. The script ends with a
per-role audit of the run.

Usage::

    python examples/custom_graph.py            # the embedded local model (extra `local`)
    python examples/custom_graph.py --fake     # an in-process fake model, no server
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph

from stratagem.agents import SOLVER_PROMPT, ChatRequest, Message, ModelClient
from stratagem.budgets import Budget
from stratagem.graphs import (
    RunContext,
    RunResult,
    RunState,
    accepted,
    finalize_node,
    run,
    stratagem_node,
)
from stratagem.logging import configure_logging
from stratagem.testing import FunctionModel

TASK = "A box holds 6 rows of 7 eggs. How many eggs are in the box?"
MAX_ROUNDS = 3
CRITIC_SYSTEM = "You check solutions. Reply KEEP or REVISE first, then one sentence."


@stratagem_node
async def solve(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """stratagem's solver role as a node: revises the last answer when there is feedback."""
    candidates = state.get("candidates", [])
    feedback = state.get("feedback")
    solution = await ctx.solver.solve(
        ctx.client, state["task"], node="solve", seed=ctx.branch_seed(len(candidates)),
        previous=candidates[-1].get("text") if feedback and candidates else None,
        feedback=feedback,
    )
    return {
        "candidates": [{"answer": solution.answer, "text": solution.text,
                        "branch": str(len(candidates)), "round": state.get("round", 0)}],
        "round": state.get("round", 0) + 1,
        "feedback": None,
        # Mark the call as used: it counts as accepted, not waste, in the audit.
        **accepted(solution),
    }


def format_check(state: RunState) -> dict[str, Any]:
    """A pure-Python node: no model call, so nothing in the ledger."""
    answer = state["candidates"][-1].get("answer", "").strip()
    if re.fullmatch(r"-?\d+(?:\.\d+)?", answer):
        return {"notes": [f"format check: {answer!r} is a number"]}
    return {"notes": [f"format check: {answer!r} is not a number"],
            "feedback": "Give the final answer as digits only, e.g. 'Answer: 12'."}


@stratagem_node
async def critic(state: RunState, ctx: RunContext) -> dict[str, Any]:
    """A user role: any call through ``ctx.client`` is budgeted and recorded as ``critic``."""
    latest = state["candidates"][-1]
    reply = await ctx.client.complete(
        [{"role": "system", "content": CRITIC_SYSTEM},
         {"role": "user", "content": f"Task: {state['task']}\n\nSolution:\n{latest['text']}"
                                     "\n\nKEEP or REVISE?"}],
        role="critic", node="critic", max_output=96,
    )
    used = accepted(reply)
    if reply.text.strip().upper().startswith("REVISE"):
        return {"feedback": reply.text.strip(), "notes": ["critic: revise"], **used}
    return {"answer": latest.get("answer", ""), "notes": ["critic: keep"], **used}


def after_check(state: RunState) -> str:
    if state.get("stop_reason"):
        return "finalize"
    if state.get("feedback") and state.get("round", 0) < MAX_ROUNDS:
        return "solve"
    return "critic"


def after_critic(state: RunState) -> str:
    if state.get("answer") or state.get("stop_reason") or state.get("round", 0) >= MAX_ROUNDS:
        return "finalize"
    return "solve"


def build_graph() -> Any:
    """solve -> format_check -> critic -> finalize, looping back to solve on feedback."""
    builder = StateGraph(RunState, context_schema=RunContext)
    builder.add_node("solve", solve)
    builder.add_node("format_check", format_check)
    builder.add_node("critic", critic)
    builder.add_node("finalize", finalize_node)  # stratagem's: picks the answer, says why
    builder.add_edge(START, "solve")
    builder.add_edge("solve", "format_check")
    builder.add_conditional_edges("format_check", after_check,
                                  ["solve", "critic", "finalize"])
    builder.add_conditional_edges("critic", after_critic, ["solve", "finalize"])
    builder.add_edge("finalize", END)
    # An explicit recursion limit: three supersteps per round, plus the finalize step.
    return builder.compile().with_config(recursion_limit=3 * MAX_ROUNDS + 4)


def fake_model() -> FunctionModel:
    """Stands in for a real model: words first, digits once told, and a critic that keeps."""

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        system = str(messages[0]["content"]) if messages[0]["role"] == "system" else ""
        prompt = str(messages[-1]["content"])
        if system == CRITIC_SYSTEM:
            return "KEEP. Six rows of seven eggs are 42 eggs."
        assert system == SOLVER_PROMPT.system, "only the solver and the critic are called"
        if "Feedback:" in prompt:
            return "6 rows times 7 eggs is 42.\nAnswer: 42"
        return "Six rows of seven eggs.\nAnswer: forty-two"

    return FunctionModel(respond)


def audit(result: RunResult, client: ModelClient) -> str:
    """A per-role table of the run's calls and tokens, then billed, accepted and waste."""
    by_role = client.ledger.group_by("role", run_id=result.run_id)
    lines = [f"{'role':<10} {'calls':>5} {'tokens':>7} {'accepted':>8}"]
    for role, totals in by_role.items():
        lines.append(f"{role:<10} {totals.calls:>5} {totals.total_tokens:>7} "
                     f"{result.accepted_tokens.get(role, 0):>8}")
    billed = result.billed
    lines.append(f"{'total':<10} {billed.calls:>5} {billed.total_tokens:>7} "
                 f"{sum(result.accepted_tokens.values()):>8}")
    lines.append(f"waste: {result.waste_tokens} tokens (billed - accepted)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the custom graph once and print the answer and the ledger audit."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--fake", action="store_true",
                        help="use an in-process fake model instead of the embedded one")
    parser.add_argument("--task", default=TASK, help="the task to solve")
    parser.add_argument("--verbose", action="store_true", help="log every model call")
    args = parser.parse_args(argv)
    configure_logging(level="info" if args.verbose else "warning")

    # No backend: the environment's endpoint, else the embedded local model.
    client = ModelClient(fake_model()) if args.fake else ModelClient()
    budget = Budget(total=8_000, roles={"solver": 5_000, "critic": 2_000})
    context = RunContext(client=client, budget=budget, labels={"example": "custom_graph"})
    result = run(build_graph(), args.task, context=context)

    print(f"answer: {result.answer}")
    print(f"stop reason: {result.stop_reason}")
    for note in result.notes:
        print(f"note: {note}")
    print()
    print(audit(result, client))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
