"""``best_of_n`` (parallel sampling + selection) and ``refine`` (solve, critique, revise)."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from stratagem.errors import ConfigError
from stratagem.graphs._common import (
    accepted,
    finalize_node,
    scores,
    stratagem_node,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._fanout import (
    Selection,
    fan_out_router,
    sample,
    score_new,
    select_node,
)
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node
from stratagem.graphs._state import RunState

__all__ = ["best_of_n", "feedback_update", "refine", "refine_nodes"]

JudgeKind = Literal["reasoning", "outcome"]
"""Which pointwise judge scores candidates: one that reasons first, or one that scores only."""

_SELECTIONS = ("vote", "judge", "knockout", "verifier")


def round_starved(state: RunState) -> dict[str, Any] | None:
    """A stop when the latest sampling round produced no candidate at all (every branch was
    refused by the budget): granting more rounds would only repeat that."""
    current = state.get("round", 0)
    if any(c.get("round", 0) == current for c in state.get("candidates", [])):
        return None
    return {"extra_samples": 0,
            "stop_reason": f"budget exhausted: no branch of sampling round {current} fit"}


def feedback_update(state: RunState, ctx: RunContext, *, judge_with: str, node: str,
                    accept_threshold: float) -> dict[str, Any]:
    """Apply the reallocation policy to the best verdict so far.

    Returns the state update: budget moves, extra samples granted, or a stop.
    """
    best = max(scores(state.get("verdicts", [])).values(), default=None)
    if ctx.policy is None or ctx.budget is None or best is None:
        return {"extra_samples": 0}
    decision = ctx.policy.on_verdict(
        ctx.account, score=best, accepted=best >= accept_threshold,
        verified=judge_with == "verifier", node=node,
    )
    moves: dict[str, int] = {}
    for t in decision.transfers:
        moves[t.from_role] = moves.get(t.from_role, 0) - t.tokens
        moves[t.to_role] = moves.get(t.to_role, 0) + t.tokens
    update: dict[str, Any] = {"budget_moves": moves, "extra_samples": decision.extra_samples}
    notes = [f"{ctx.policy.name}: {decision.reason}"]
    if decision.transfers:
        notes.append(", ".join(f"moved {t.tokens} tokens {t.from_role}->{t.to_role}"
                               for t in decision.transfers))
    update["notes"] = notes
    if decision.stop:
        update["stop_reason"] = decision.reason
        update["extra_samples"] = 0
    return update


def best_of_n(
    n: int = 4,
    *,
    select: Selection = "vote",
    max_rounds: int = 3,
    accept_threshold: float = 0.7,
    judge: JudgeKind = "reasoning",
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """N parallel solver samples, then one answer chosen by ``select``.

    ``vote`` (majority, no extra calls), ``judge`` (pointwise LLM scores), ``knockout``
    (pairwise LLM tournament) or ``verifier`` (the task's checker). With a reallocation
    policy in the run context, a low best score grants extra samples, up to ``max_rounds``
    rounds of sampling in all. ``judge`` says which pointwise judge scores with
    ``select="judge"``: ``reasoning`` (the run context's judge, which reasons before it
    scores) or ``outcome`` (its ``outcome_judge``, which writes the score only). The first
    round's sampling does not depend on it: the same seeds and budget give both the same
    candidates (later rounds, under a reallocation policy, follow the judge's scores).

    Raises:
        ConfigError: For ``n`` or ``max_rounds`` out of range, or an unknown selection.
    """
    if judge not in ("reasoning", "outcome"):
        raise ConfigError(f"best_of_n judge must be 'reasoning' or 'outcome', got {judge!r}")
    if n < 1 or n > 256:
        raise ConfigError(f"best_of_n needs 1 <= n <= 256, got {n}")
    if max_rounds < 1 or max_rounds > 64:
        raise ConfigError(f"best_of_n needs 1 <= max_rounds <= 64, got {max_rounds}")
    if select not in _SELECTIONS:
        raise ConfigError(f"unknown selection {select!r}: use one of {', '.join(_SELECTIONS)}")
    judged = select in ("judge", "verifier")

    @stratagem_node
    async def feedback(state: RunState, ctx: RunContext) -> dict[str, Any]:
        if not judged or state.get("round", 0) + 1 >= max_rounds:
            return {"extra_samples": 0}
        starved = round_starved(state)
        if starved is not None:
            return starved
        update = feedback_update(state, ctx, judge_with="verifier" if select == "verifier"
                                 else "llm", node="feedback", accept_threshold=accept_threshold)
        if update.get("extra_samples"):
            update["round"] = state.get("round", 0) + 1
        return update

    def more(state: RunState, runtime: Any) -> Any:
        if state.get("stop_reason") or not state.get("extra_samples"):
            return "finalize"
        return fan_out_router(n)(state, runtime)

    g: Builder = StateGraph(
        RunState, context_schema=RunContext)
    add_node(g, "sample", sample)
    add_node(g, "select", select_node(select, judge=judge))
    add_node(g, "feedback", feedback)
    add_node(g, "finalize", finalize_node)
    g.add_conditional_edges(START, fan_out_router(n), ["sample", "finalize"])
    g.add_edge("sample", "select")
    g.add_edge("select", "feedback")
    g.add_conditional_edges("feedback", more, ["sample", "finalize"])
    g.add_edge("finalize", END)
    return _compile(g, checkpointer, recursion_limit=3 * max_rounds + 4)


def refine_nodes(
    max_rounds: int, judge_with: str, accept_threshold: float
) -> tuple[Any, Any]:
    """The ``(solve, judge)`` nodes of a refinement loop (shared by ``refine`` and
    ``adaptive``). ``solve`` revises the latest candidate against its critique."""

    @stratagem_node
    async def solve(state: RunState, ctx: RunContext) -> dict[str, Any]:
        candidates = state.get("candidates", [])
        last = candidates[-1] if candidates else None
        critique = None
        if last is not None:
            latest = [v for v in state.get("verdicts", []) if v.get("index") == len(candidates) - 1]
            critique = latest[-1].get("rationale") if latest else None
        solution = await ctx.solver.solve(
            ctx.client, state["task"], node="solve" if last is None else "revise",
            previous=None if last is None else last.get("text"), feedback=critique,
            seed=ctx.branch_seed(len(candidates)), temperature=ctx.temperature,
            **ctx.extra(),
        )
        return {"candidates": [{"answer": solution.answer, "text": solution.text,
                                "branch": str(len(candidates)), "round": state.get("round", 0),
                                "parent": None if last is None else len(candidates) - 1}],
                **accepted(solution)}

    @stratagem_node
    async def judge(state: RunState, ctx: RunContext) -> dict[str, Any]:
        update = await score_new(state, ctx, judge_with)
        merged: RunState = {**state, "verdicts": [*state.get("verdicts", []),
                                                  *update["verdicts"]]}
        policy = feedback_update(merged, ctx, judge_with=judge_with, node="judge",
                                 accept_threshold=accept_threshold)
        policy.pop("extra_samples", None)
        latest = update["verdicts"][-1] if update["verdicts"] else None
        nxt = state.get("round", 0) + 1
        update.update({k: v for k, v in policy.items() if k != "notes"})
        update["notes"] = [*update.get("notes", []), *policy.get("notes", [])]
        update["round"] = nxt
        if latest is not None and latest["verdict"] == "accept" and \
                latest["score"] >= accept_threshold:
            update["stop_reason"] = update.get("stop_reason") or "accepted by the judge"
        elif nxt >= max_rounds:
            update["stop_reason"] = update.get("stop_reason") or f"{max_rounds} rounds done"
        return update

    return solve, judge


def refine(
    max_rounds: int = 3,
    *,
    judge_with: str = "llm",
    accept_threshold: float = 0.7,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """Solve, then judge-critique-revise until accepted, out of rounds or out of budget.

    The judge reasons before it scores; its rationale is the critique the solver revises
    against. ``judge_with="verifier"`` uses the task's checker instead (no judge tokens).
    The final answer is the best-scored of all revisions.
    """
    if max_rounds < 1 or max_rounds > 64:
        raise ConfigError(f"refine needs 1 <= max_rounds <= 64, got {max_rounds}")
    if judge_with not in ("llm", "verifier"):
        raise ConfigError(f"judge_with must be 'llm' or 'verifier', got {judge_with!r}")
    solve, judge = refine_nodes(max_rounds, judge_with, accept_threshold)

    g: Builder = StateGraph(
        RunState, context_schema=RunContext)
    add_node(g, "solve", solve)
    add_node(g, "judge", judge)
    add_node(g, "finalize", finalize_node)
    g.add_edge(START, "solve")

    def after_solve(state: RunState) -> str:
        return "finalize" if state.get("stop_reason") else "judge"

    def after_judge(state: RunState) -> str:
        return "finalize" if state.get("stop_reason") else "solve"

    g.add_conditional_edges("solve", after_solve, ["judge", "finalize"])
    g.add_conditional_edges("judge", after_judge, ["solve", "finalize"])
    g.add_edge("finalize", END)
    return _compile(g, checkpointer, recursion_limit=2 * max_rounds + 4)

