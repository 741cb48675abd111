"""``adaptive_consistency``: majority voting that stops once the majority is clear.

Samples are drawn ``batch`` at a time (branch ``i`` with seed ``seed + i``, as in
``best_of_n``, so its first ``k`` samples are best-of-``k``'s); after each round the
:class:`~stratagem.budgets.AdaptiveConsistency` rule reads the votes and either stops with
the leading answer or draws another round, until ``max_samples`` or the budget runs out.
No judge and no verifier: the baseline for tasks that have none.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.budgets import AdaptiveConsistency
from stratagem.graphs._common import answer_key, finalize_node, run_context
from stratagem.graphs._context import RunContext
from stratagem.graphs._fanout import fan_out, sample
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node
from stratagem.graphs._state import RunState

__all__ = ["adaptive_consistency"]


def adaptive_consistency(
    max_samples: int = 16,
    *,
    threshold: float = 0.95,
    batch: int = 1,
    min_samples: int = 1,
    criterion: Literal["beta", "dirichlet"] = "beta",
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """Sample until the leading answer is the majority with probability ``threshold``.

    Args:
        max_samples: The most samples drawn (the fixed self-consistency it replaces).
        threshold: The posterior probability of the leader being the majority that stops it.
        batch: Samples per round (drawn in parallel).
        min_samples: Never stop before this many.
        criterion: ``beta`` (the two leading answers) or ``dirichlet`` (all of them).

    Raises:
        ConfigError: For parameters out of range (see
            :class:`~stratagem.budgets.AdaptiveConsistency`).
    """
    rule = AdaptiveConsistency(threshold=threshold, max_samples=max_samples,
                               min_samples=min_samples, batch=batch, criterion=criterion)

    def first(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        return fan_out(state, run_context(runtime), min(rule.batch, rule.max_samples))

    def vote(state: RunState) -> dict[str, Any]:
        candidates = state.get("candidates", [])
        current = state.get("round", 0)
        if not any(c.get("round", 0) == current for c in candidates):
            return {"stop_reason": state.get("stop_reason")
                    or f"budget exhausted: no sample of round {current} fit"}
        answers = [answer_key(c.get("answer", "")) for c in candidates]
        decision = rule.decide(answers)
        update: dict[str, Any] = {"notes": [decision.reason]}
        if decision.stop:
            chosen = next((c for c, a in zip(candidates, answers, strict=True)
                           if decision.leader is not None and a == decision.leader),
                          candidates[0])
            update.update(answer=chosen.get("answer", ""), answer_text=chosen.get("text", ""),
                          stop_reason=decision.reason)
        else:
            update["round"] = current + 1
        return update

    def more(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason"):
            return "finalize"
        drawn = len(state.get("candidates", []))
        return fan_out(state, run_context(runtime), min(rule.batch, rule.max_samples - drawn))

    g: Builder = StateGraph(RunState, context_schema=RunContext)
    add_node(g, "sample", sample)
    add_node(g, "vote", vote)
    add_node(g, "finalize", finalize_node)
    g.add_conditional_edges(START, first, ["sample", "finalize"])
    g.add_edge("sample", "vote")
    g.add_conditional_edges("vote", more, ["sample", "finalize"])
    g.add_edge("finalize", END)
    rounds = -(-rule.max_samples // rule.batch)
    return _compile(g, checkpointer, recursion_limit=2 * rounds + 4)
