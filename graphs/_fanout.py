"""Parallel sampling: the Send fan-out with per-branch allowances, and selection.

Used by ``best_of_n``, ``tree`` and ``adaptive``. Before the fan-out, the solver's remaining
budget is divided between the branches and each ``Send`` carries its branch's allowance, so
parallel branches (which all read the same state snapshot) cannot starve one another; the
shared :class:`~stratagem.budgets.Budget` still enforces every cap atomically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.agents import knockout
from stratagem.errors import BudgetExceeded, ModelError, OutputParseError
from stratagem.graphs._common import (
    accepted,
    majority_vote,
    run_context,
    scores,
    stopped,
    stratagem_node,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._state import BranchInput, Candidate, CandidateVerdict, RunState

__all__ = ["Selection", "fan_out", "sample", "score_new", "select"]

Selection = Literal["vote", "judge", "knockout", "verifier"]


def fan_out(
    state: RunState,
    ctx: RunContext,
    n: int,
    *,
    node: str = "sample",
    revise: Sequence[int] = (),
    logprobs: bool = False,
) -> list[Send]:
    """``n`` Sends to ``node``, each with its allowance (solver budget left / n).

    With ``revise``, each Send refines one existing candidate (its answer and the latest
    critique go along), for tree search. With ``logprobs`` each sample asks for its token
    log-probabilities (so do branches below ``ctx.logprob_samples``).
    """
    budget = ctx.budget
    left = None if budget is None else budget.remaining("solver")
    allowance = None if left is None else max(1, left // max(1, n))
    start = len(state.get("candidates", []))
    feedback = {v["index"]: v.get("rationale", "") for v in state.get("verdicts", [])
                if v.get("index") is not None}
    sends = []
    for k in range(n):
        branch = start + k
        payload: BranchInput = {
            "task": state["task"],
            "branch": str(branch),
            "allowance": allowance,
            "temperature": ctx.temperature,
            "seed": ctx.branch_seed(branch),
            "round": state.get("round", 0),
            "parent": None,
        }
        if logprobs or branch < ctx.logprob_samples:
            payload["logprobs"] = True
        if revise:
            parent = revise[k % len(revise)]
            payload["parent"] = parent
            payload["previous"] = state["candidates"][parent].get("text", "")
            payload["feedback"] = feedback.get(parent) or None
        sends.append(Send(node, payload))
    return sends


async def sample(inp: BranchInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """One parallel solver branch."""

    @stratagem_node
    async def sample_branch(inp: BranchInput, ctx: RunContext) -> dict[str, Any]:
        # (only when asked: a user's solver need not take the parameter otherwise)
        asked: dict[str, Any] = {"logprobs": True} if inp.get("logprobs") else {}
        solution = await ctx.solver.solve(
            ctx.client, inp["task"], node="sample", branch=inp["branch"],
            temperature=inp.get("temperature"), seed=inp.get("seed"),
            previous=inp.get("previous"), feedback=inp.get("feedback"),
            allowance=inp.get("allowance"), **ctx.extra(), **asked,
        )
        candidate: Candidate = {
            "answer": solution.answer, "text": solution.text, "branch": inp["branch"],
            "round": inp.get("round", 0), "parent": inp.get("parent"),
        }
        if inp.get("logprobs"):
            candidate["mean_logprob"] = getattr(solution, "mean_logprob", None)
        return {"candidates": [candidate], **accepted(solution)}

    update = await sample_branch(inp, runtime)
    if "stop_reason" in update:
        # One branch out of budget or failed: a note, not the end of the run; the others'
        # candidates are still used.
        return {"notes": [f"branch {inp['branch']}: {update['stop_reason']}"],
                **{k: v for k, v in update.items() if k not in ("stop_reason", "notes")}}
    return update


async def score_new(state: RunState, ctx: RunContext, judge_with: str, *,
                    outcome_only: bool = False) -> dict[str, Any]:
    """Score every candidate that has no verdict yet, concurrently (``outcome_only``: with
    the context's outcome-only judge instead of its judge)."""
    candidates = state.get("candidates", [])
    done = scores(state.get("verdicts", []))
    todo = [i for i in range(len(candidates)) if i not in done]
    judge = ctx.outcome_judge if outcome_only and judge_with == "llm" \
        else ctx.judge_for(judge_with)
    # Concurrent judge calls share the judge's budget evenly, as solver branches do: one
    # call's reservation must not take everything its siblings need.
    left = None if ctx.budget is None else ctx.budget.remaining("judge")
    allowance = None if left is None or not todo else max(1, left // len(todo))
    extra = {**ctx.extra(), **({"allowance": allowance} if allowance is not None else {})}

    async def one(i: int) -> tuple[int, Any]:
        try:
            verdict = await judge.score(ctx.client, state["task"],
                                        candidates[i].get("text", ""), node="judge",
                                        branch=str(i), **extra)
        except (ModelError, BudgetExceeded) as exc:
            # An unreadable verdict leaves the candidate unscored; its tokens stay billed
            # (waste), and the run goes on. A judge call the budget cannot fit is an outcome
            # too, so its siblings still finish and keep their verdicts.
            return i, exc
        return i, verdict

    # return_exceptions: a failing call must not leave its siblings running, orphaned,
    # after this node returned (their rows would land in the ledger after the run ended).
    gathered = await asyncio.gather(*(one(i) for i in todo), return_exceptions=True)
    for o in gathered:
        if isinstance(o, BaseException):
            raise o
    outcomes = [o for o in gathered if not isinstance(o, BaseException)]
    results = [(i, v) for i, v in outcomes
               if not isinstance(v, ModelError | BudgetExceeded)]
    notes = [f"judge verdict on candidate {i} unreadable: {v}" if isinstance(v, OutputParseError)
             else f"judge call on candidate {i} failed: {v}"
             for i, v in outcomes if isinstance(v, ModelError)]
    verdicts = [
        CandidateVerdict(index=i, score=v.score, verdict=v.verdict, rationale=v.rationale[:2000],
                         by=judge_with, round=state.get("round", 0))
        for i, v in results
    ]
    update = {"verdicts": verdicts, "notes": notes, **accepted(*(v for _, v in results))}
    lost = sum(isinstance(v, ModelError) and not isinstance(v, OutputParseError)
               for _, v in outcomes)
    if lost:
        update["failed_calls"] = lost
    out_of_budget = [v for _, v in outcomes if isinstance(v, BudgetExceeded)]
    if out_of_budget:
        update.update(stopped(out_of_budget[0], refused=len(out_of_budget)))
    return update


async def select(state: RunState, ctx: RunContext, how: Selection, *,
                 judge: str = "reasoning") -> dict[str, Any]:
    """Pick the answer among the candidates: vote, pointwise judge, knockout, or verifier
    (``judge="outcome"``: the pointwise judge is the context's outcome-only one)."""
    candidates = state.get("candidates", [])
    if not candidates:
        return {"stop_reason": state.get("stop_reason") or "no candidate survived"}
    if how == "vote":
        i = majority_vote(candidates)
        i = 0 if i is None else i
        return {"answer": candidates[i].get("answer", "")}
    if how == "knockout":
        result = await knockout(ctx.judge, ctx.client, state["task"],
                                [c.get("text", "") for c in candidates], node="judge")
        winner = result.winner_index
        return {"answer": candidates[winner].get("answer", ""),
                "notes": [f"knockout: {len(result.matches)} matches, winner {winner}"],
                **accepted(result)}
    judged = await score_new(state, ctx, "verifier" if how == "verifier" else "llm",
                             outcome_only=judge == "outcome")
    return judged


def select_node(how: Selection, *, judge: str = "reasoning") -> Any:
    """A LangGraph node running :func:`select` with stratagem's guarantees."""

    @stratagem_node
    async def select_answer(state: RunState, ctx: RunContext) -> dict[str, Any]:
        return await select(state, ctx, how, judge=judge)

    return select_answer


def fan_out_router(n_default: int, node: str = "sample") -> Any:
    """A conditional-edge function fanning out ``extra_samples`` or ``n_default`` branches."""

    def route(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason"):
            return "finalize"
        ctx = run_context(runtime)
        n = state.get("extra_samples") or n_default
        return fan_out(state, ctx, n, node=node)

    return route
