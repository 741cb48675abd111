"""``compute_optimal``: probe a query, choose how to go on from a calibration table, go on.

The graph behind the :class:`~stratagem.budgets.ComputeOptimal` policy (the ablation runner
builds it for that policy's cells; it is not a topology of the grid by itself, since it needs
a fitted :class:`~stratagem.budgets.CalibrationTable`). The probe is the first ``probe``
samples (branch seeds as in ``best_of_n``), checked by the verifier when the task has one,
and asked for their token log-probabilities when the table's probe signal uses them;
the choice is recorded in the ledger with its reason; then sampling goes on by the chosen
option: ``stop``, ``sequential:M`` (until a sample is verified), ``vote:M`` or ``ac:M``
(Adaptive-Consistency).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.budgets import (
    AdaptiveConsistency,
    CalibrationTable,
    probe_logprob,
    record_choice,
)
from stratagem.graphs._common import answer_key, finalize_node, run_context, scores
from stratagem.graphs._context import RunContext
from stratagem.graphs._fanout import fan_out, sample, score_new
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node
from stratagem.graphs._state import RunState

__all__ = ["compute_optimal"]


def compute_optimal(
    table: CalibrationTable | Mapping[str, Any],
    *,
    price: float = 0.0,
    cap_tokens: float | None = None,
    threshold: float = 0.95,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """Probe, choose per :meth:`CalibrationTable.best`, and sample on by the choice.

    Args:
        table: The fitted table (or its JSON form).
        price: The token price the choice weighs expected tokens at (see
            :meth:`CalibrationTable.price_for`).
        cap_tokens: Options expected to spend more are not considered.
        threshold: Adaptive-Consistency threshold of ``ac:M`` options.
    """
    fitted = table if isinstance(table, CalibrationTable) else CalibrationTable.from_json(table)
    verifier = fitted.verifier
    probe = fitted.probe

    def start(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        return fan_out(state, run_context(runtime), probe,
                       logprobs=fitted.signal != "agreement")

    async def check(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = run_context(runtime)
        candidates = state.get("candidates", [])
        current = state.get("round", 0)
        update: dict[str, Any] = {}
        verdicts = list(state.get("verdicts", []))
        if verifier and ctx.verifier is not None:
            judged = await score_new(state, ctx, "verifier")
            verdicts += judged.get("verdicts", [])
            update["verdicts"] = judged.get("verdicts", [])
        if not any(c.get("round", 0) == current for c in candidates):
            update["stop_reason"] = (state.get("stop_reason")
                                     or f"budget exhausted: no sample of round {current} fit")
            return update
        chosen = state.get("plan")
        if not chosen:
            passed = scores(verdicts)
            b = fitted.bin_for([answer_key(c.get("answer", "")) for c in candidates],
                               [passed.get(i, 0.0) >= 0.5 for i in range(len(candidates))],
                               [c.get("mean_logprob") for c in candidates])
            choice = fitted.best(b, price, cap_tokens)
            record_choice(ctx.client.ledger, state.get("run_id", ""), choice,
                          tokens=int(cap_tokens or choice.expected_tokens))
            update["plan"] = {"mode": choice.option, "rationale": choice.reason, "bin": b,
                              "expected_accuracy": choice.expected_accuracy,
                              "probe_logprob": probe_logprob(
                                  [c.get("mean_logprob") for c in candidates])}
            update["notes"] = [choice.reason]
        update["round"] = current + 1
        return update

    def more(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason"):
            return "finalize"
        chosen = state.get("plan") or {}
        kind, _, m_text = str(chosen.get("mode", "stop")).partition(":")
        candidates = state.get("candidates", [])
        drawn = len(candidates)
        cap = int(m_text) if m_text else 0
        if kind == "stop" or drawn >= cap:
            return "finalize"
        if verifier and any(s >= 0.5 for s in scores(state.get("verdicts", [])).values()):
            return "finalize"  # a verified sample: nothing left to gain
        ctx = run_context(runtime)
        if kind == "vote":
            return fan_out(state, ctx, cap - drawn)
        if kind == "ac":
            rule = AdaptiveConsistency(threshold=threshold, max_samples=cap)
            if rule.decide([answer_key(c.get("answer", "")) for c in candidates]).stop:
                return "finalize"
        return fan_out(state, ctx, 1)

    g: Builder = StateGraph(RunState, context_schema=RunContext)
    add_node(g, "sample", sample)
    add_node(g, "check", check)
    add_node(g, "finalize", finalize_node)
    g.add_conditional_edges(START, start, ["sample", "finalize"])
    g.add_edge("sample", "check")
    g.add_conditional_edges("check", more, ["sample", "finalize"])
    g.add_edge("finalize", END)
    most = max([probe, *(int(o.partition(":")[2]) for o in fitted.options if ":" in o)])
    return _compile(g, checkpointer, recursion_limit=2 * most + 6)
