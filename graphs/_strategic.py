"""``compute_optimal``: probe a query, choose how to go on from a calibration table, go on.

The graph behind the :class:`~stratagem.budgets.ComputeOptimal` policy (the ablation runner
builds it for that policy's cells; it is not a topology of the grid by itself, since it needs
a fitted :class:`~stratagem.budgets.CalibrationTable`). The probe is the first ``probe``
samples (branch seeds as in ``best_of_n``), checked by the verifier when the task has one,
and asked for their token log-probabilities when the table's probe signal uses them;
the choice is recorded in the ledger with its reason; then the run goes on by the chosen
option: ``stop``, ``sequential:M`` (until a sample is verified), ``vote:M`` or ``ac:M``
(Adaptive-Consistency); ``refine:R`` runs the ``refine`` topology's own nodes
(:func:`~stratagem.graphs.refine_nodes`: critique, revise, up to ``R`` revisions of the latest
answer, stopping when one is accepted) and ``decompose`` the ``decompose_solve`` topology's
(:func:`~stratagem.graphs.add_decomposition`), whose aggregate is the answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.budgets import (
    AdaptiveConsistency,
    CalibrationTable,
    StrategyChoice,
    probe_logprob,
    record_choice,
)
from stratagem.errors import ConfigError
from stratagem.graphs._common import (
    answer_key,
    finalize_node,
    route_unless_stopped,
    run_context,
    scores,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._decompose import add_decomposition
from stratagem.graphs._fanout import fan_out, sample, score_new
from stratagem.graphs._loops import refine_nodes
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node
from stratagem.graphs._state import RunState

__all__ = ["compute_optimal"]


def compute_optimal(
    table: CalibrationTable | Mapping[str, Any],
    *,
    price: float = 0.0,
    cap_tokens: float | None = None,
    threshold: float = 0.95,
    accept_threshold: float = 0.7,
    force: str | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """Probe, choose per :meth:`CalibrationTable.best`, and go on by the choice.

    Args:
        table: The fitted table (or its JSON form).
        price: The token price the choice weighs expected tokens at (see
            :meth:`CalibrationTable.price_for`).
        cap_tokens: Options expected to spend more are not considered.
        threshold: Adaptive-Consistency threshold of ``ac:M`` options.
        accept_threshold: The judge score that ends a ``refine:R`` option early.
        force: Take this option for every query whose probe was not verified, whatever the
            table says (how a calibration runs ``refine:R`` and ``decompose``).

    Raises:
        ConfigError: If ``force`` is not an option this graph can run.
    """
    fitted = table if isinstance(table, CalibrationTable) else CalibrationTable.from_json(table)
    verifier = fitted.verifier
    probe = fitted.probe
    runnable = [*fitted.options, *([force] if force else [])]
    if force is not None and force.partition(":")[0] not in (
            "stop", "sequential", "vote", "ac", "refine", "decompose"):
        raise ConfigError(f"compute_optimal cannot run option {force!r}")
    refines = sorted({int(o.partition(":")[2]) for o in runnable if o.startswith("refine:")})
    decomposes = "decompose" in runnable
    judge_with = "verifier" if verifier else "llm"

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
            if force is not None and b != "verified":
                acc, tokens = fitted.expected(b, force) if force in fitted.options \
                    else (float("nan"), 0.0)
                choice = StrategyChoice(force, b, acc, tokens,
                                        f"compute_optimal: probe {b}: {force} (forced: "
                                        "calibration of an option that must be run)")
            record_choice(ctx.client.ledger, state.get("run_id", ""), choice,
                          tokens=int(cap_tokens or choice.expected_tokens))
            update["plan"] = {"mode": choice.option, "rationale": choice.reason, "bin": b,
                              # (None: a forced option the table has no figure for)
                              "expected_accuracy": None if math.isnan(
                                  choice.expected_accuracy) else choice.expected_accuracy,
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
        if kind == "stop":
            return "finalize"
        if verifier and any(s >= 0.5 for s in scores(state.get("verdicts", [])).values()):
            return "finalize"  # a verified sample: nothing left to gain
        if kind == "decompose":
            return "decompose"
        if kind == "refine":
            # Critique the latest answer first unless the probe's check already judged it.
            judged = any(v.get("index") == drawn - 1 for v in state.get("verdicts", []))
            return f"revise_{m_text}" if judged else f"critique_{m_text}"
        cap = int(m_text) if m_text else 0
        if drawn >= cap:
            return "finalize"
        ctx = run_context(runtime)
        if kind == "vote":
            return fan_out(state, ctx, cap - drawn)
        if kind == "ac":
            rule = AdaptiveConsistency(threshold=threshold, max_samples=cap)
            if rule.decide([answer_key(c.get("answer", "")) for c in candidates]).stop:
                return "finalize"
        return fan_out(state, ctx, 1)

    def finish(state: RunState) -> dict[str, Any]:
        if (state.get("plan") or {}).get("mode") == "decompose" and not state.get("answer"):
            # The decomposition's answer is its aggregate's, not the failed probe's.
            made = [c for c in state.get("candidates", []) if c.get("branch") == "aggregate"]
            if made:
                picked = {"answer": made[-1].get("answer", ""),
                          "answer_text": made[-1].get("text", "")}
                return {**finalize_node({**state, **picked}), **picked}  # type: ignore[typeddict-item]
        return finalize_node(state)

    g: Builder = StateGraph(RunState, context_schema=RunContext)
    add_node(g, "sample", sample)
    add_node(g, "check", check)
    add_node(g, "finalize", finish)
    targets = ["sample", "finalize"]
    for r in refines:
        # After the probe's check the round is 1: with a verifier the probe is judged
        # already (revise first, r judged revisions end at round 1 + r); without one the
        # judge critiques it first (one more judged round).
        revise, critique = refine_nodes((1 if verifier else 2) + r, judge_with,
                                        accept_threshold)
        add_node(g, f"revise_{r}", revise)
        add_node(g, f"critique_{r}", critique)
        g.add_conditional_edges(f"revise_{r}", route_unless_stopped(f"critique_{r}"),
                                [f"critique_{r}", "finalize"])
        g.add_conditional_edges(f"critique_{r}", route_unless_stopped(f"revise_{r}"),
                                [f"revise_{r}", "finalize"])
        targets += [f"revise_{r}", f"critique_{r}"]
    if decomposes:
        add_decomposition(g, entry="decompose")
        targets.append("decompose")
    g.add_conditional_edges(START, start, ["sample", "finalize"])
    g.add_edge("sample", "check")
    g.add_conditional_edges("check", more, targets)
    g.add_edge("finalize", END)
    most = max([probe, *(int(o.partition(":")[2]) for o in runnable
                         if o.partition(":")[0] in ("sequential", "vote", "ac"))])
    limit = 2 * most + 6 + 4 * max(refines, default=0) + (2 * 16 + 6 if decomposes else 0)
    return _compile(g, checkpointer, recursion_limit=limit)
