"""Helpers shared by every topology's nodes, and public ones for users' own nodes."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from langgraph.runtime import Runtime

from stratagem.agents import Completion, answer_key
from stratagem.budgets import LedgerEntry, TokenLedger
from stratagem.errors import BudgetExceeded, ModelError, OutputParseError, RunError
from stratagem.graphs._context import RunContext
from stratagem.graphs._state import Candidate, CandidateVerdict, RunState
from stratagem.logging import bind_run, get_logger

__all__ = [
    "accepted",
    "answer_key",
    "best_candidate",
    "finalize_node",
    "majority_vote",
    "normalize_answer",
    "run_context",
    "scores",
    "stopped",
    "stratagem_node",
]

_log = get_logger("stratagem.graph")
S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class _RoleNode(Protocol[S_contra]):
    """What :func:`stratagem_node` returns. ``runtime`` is named (not positional-only) so
    the node matches LangGraph's ``add_node`` overloads under strict type checking."""

    def __call__(
        self, state: S_contra, runtime: Runtime[RunContext]
    ) -> Awaitable[dict[str, Any]]: ...


def run_context(runtime: Runtime[RunContext]) -> RunContext:
    """The run's :class:`RunContext`, with a clear error when it was not passed.

    Raises:
        RunError: If the graph was invoked (or resumed) without ``context=``.
    """
    ctx = runtime.context
    if ctx is None:
        raise RunError(
            "the run context is missing: invoke the graph with context=RunContext(...) "
            "(it is not checkpointed, so a resume must pass it again)"
        )
    return ctx


def task_id(runtime: Runtime[Any]) -> str | None:
    """The LangGraph task id of the running node, for ledger rows."""
    info = getattr(runtime, "execution_info", None)
    return None if info is None else str(info.task_id)


def accepted(*outputs: Any) -> dict[str, Any]:
    """A state update marking these calls' output as used (the accepted view).

    Pass what the node used: :class:`~stratagem.agents.Completion` objects, their ledger
    rows, or role outputs (which carry the rows of their replies): ``accepted(done)``,
    ``accepted(solution)``, ``accepted(*verdicts)``. The older form
    ``accepted(ledger, call_ids)`` still works (deprecated: the completions already hold
    their rows).
    """
    if outputs and isinstance(outputs[0], TokenLedger):
        warnings.warn("accepted(ledger, call_ids) is deprecated: pass the completions, "
                      "accepted(*completions)", DeprecationWarning, stacklevel=2)
        ledger = outputs[0]
        ids = [str(c) for group in outputs[1:] if isinstance(group, Iterable)
               for c in group if c]
        return _accepted([r for r in map(ledger.get, ids) if r is not None])
    flat: list[LedgerEntry] = []
    for out in outputs:
        flat.extend(_rows_of(out))
    return _accepted(flat)


def _rows_of(out: Any) -> list[LedgerEntry]:
    if isinstance(out, Completion):
        return [out.entry]
    if isinstance(out, LedgerEntry):
        return [out]
    rows = getattr(out, "rows", None)  # a role's output: the rows of its replies
    if rows is not None:
        return list(rows)
    if isinstance(out, Iterable) and not isinstance(out, str | bytes):
        return [r for o in out for r in _rows_of(o)]
    return []


def _accepted(rows: Sequence[LedgerEntry]) -> dict[str, Any]:
    tokens: dict[str, int] = {}
    for row in rows:
        tokens[row.role] = tokens.get(row.role, 0) + row.total_tokens
    return {"accepted_calls": [r.call_id for r in rows], "accepted_tokens": tokens}


def skip_role(ctx: RunContext, role: str, why: str, *, node: str,
              to_role: str = "solver") -> dict[str, Any]:
    """A state update for an optional role (planner, decomposer) that could not do its job:
    a note, and its unspent budget moved to ``to_role`` (a recorded transfer) so the run can
    go on without it."""
    update: dict[str, Any] = {"notes": [f"{role} skipped ({why}); going on without it"]}
    account = ctx.account
    if account.budget is None or account.limit(to_role) is None:
        return update
    unspent = account.unspent(role) or 0
    if unspent > 0:
        t = account.transfer(role, to_role, unspent, f"{role} skipped: {why[:200]}", node=node)
        update["budget_moves"] = {role: -t.tokens, to_role: t.tokens}
    return update


def stopped(exc: BudgetExceeded, *, refused: int = 1) -> dict[str, Any]:
    """A state update ending the run gracefully because the budget ran out (``refused``:
    how many calls it could not fit, counted in ``refused_calls``)."""
    return {"stop_reason": f"budget exhausted: {exc}", "refused_calls": refused}


def stratagem_node(
    fn: Callable[[S, RunContext], Awaitable[dict[str, Any]]],
) -> _RoleNode[S]:
    """Turn ``async fn(state, ctx)`` into a LangGraph node with stratagem's guarantees.

    The node gets the run's :class:`RunContext`; a :class:`BudgetExceeded` ends the run
    gracefully (``stop_reason``) instead of raising; a :class:`ModelError` that survived the
    client's retries becomes a note and a stop reason. Every model call the node makes
    through ``ctx.client`` is in the ledger, attributed to the role it names.

    Example:
        >>> @stratagem_node
        ... async def critic(state, ctx):
        ...     done = await ctx.client.complete(
        ...         [{"role": "user", "content": state["task"]}], role="critic", node="critic")
        ...     return {"notes": [done.text], **accepted(done)}
    """

    async def node(state: S, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = run_context(runtime)
        # The node's calls are stamped with its name and LangGraph task: an explicit bound
        # view of the run's account, not a variable shared between packages.
        ctx = replace(ctx, client=ctx.client.bind(node=fn.__name__, task_id=task_id(runtime)))
        try:
            with bind_run(node=fn.__name__):
                return await fn(state, ctx)
        except BudgetExceeded as exc:
            _log.info("run.budget_exhausted", node=fn.__name__, error=str(exc))
            return stopped(exc)
        except ModelError as exc:
            _log.warning("run.model_failed", node=fn.__name__, error=str(exc))
            return {"notes": [f"{fn.__name__}: {exc}"], "stop_reason": f"model failed: {exc}",
                    "failed_calls": 0 if isinstance(exc, OutputParseError) else 1}

    # Not functools.wraps: LangGraph reads the signature to inject `runtime`, and __wrapped__
    # would show it fn's (state, ctx) instead.
    node.__name__ = node.__qualname__ = fn.__name__
    node.__doc__ = fn.__doc__

    return node


def normalize_answer(answer: str) -> str:
    """Deprecated: the vote key is :func:`answer_key` (the same rule the checkers use).

    It used to be a looser form (every punctuation mark collapsed to a space) than the one
    checkers compared in, so a vote could group answers a checker told apart.
    """
    warnings.warn(
        "stratagem.graphs.normalize_answer is deprecated: voting and checking now share one "
        "rule, stratagem.graphs.answer_key (also stratagem.agents.answer_key)",
        DeprecationWarning,
        stacklevel=2,
    )
    return answer_key(answer)


def majority_vote(candidates: Sequence[Candidate]) -> int | None:
    """Index of the most common answer (the first one seen wins ties); ``None`` if none.

    Answers are grouped by :func:`answer_key`, so two candidates count as the same answer
    exactly when a checker would say they match (``42`` and ``42.0``, ``Paris`` and
    ``"paris".``).

    Example:
        >>> majority_vote([{"answer": "41"}, {"answer": "42.0"}, {"answer": "42"}])
        1
    """
    answers = [answer_key(c.get("answer", "")) for c in candidates]
    counts = Counter(a for a in answers if a)
    if not counts:
        return None
    top = max(counts.values())
    return next(i for i, a in enumerate(answers) if a and counts[a] == top)


def scores(verdicts: Sequence[CandidateVerdict]) -> dict[int, float]:
    """Candidate index -> its latest score, from the verdicts in state (a verdict a custom
    node wrote without an ``index`` is skipped)."""
    out: dict[int, float] = {}
    for v in verdicts:
        if v.get("index") is not None:
            out[int(v["index"])] = float(v["score"])
    return out


def best_candidate(
    candidates: Sequence[Candidate], verdicts: Sequence[CandidateVerdict] = ()
) -> int | None:
    """The highest-scored candidate (earliest on ties), else the majority vote."""
    scored = scores(verdicts)
    if scored:
        return max(scored, key=lambda i: (scored[i], -i))
    return majority_vote(candidates)


def finalize_node(state: RunState) -> dict[str, Any]:
    """Choose the final answer from what the run produced, and say why it ended."""
    candidates = state.get("candidates", [])
    update: dict[str, Any] = {"stop_reason": state.get("stop_reason") or "done"}
    if state.get("answer"):
        if not state.get("answer_text"):
            chosen = [c for c in candidates if c.get("answer") == state["answer"]]
            update["answer_text"] = chosen[0].get("text", "") if chosen else state["answer"]
        return update
    verdicts = state.get("verdicts", [])
    i = best_candidate(candidates, verdicts)
    if i is not None:
        update["answer"] = candidates[i].get("answer", "")
        update["answer_text"] = candidates[i].get("text", "")
        update["score"] = scores(verdicts).get(i)
    else:
        update["answer"] = ""
        if update["stop_reason"] == "done":
            update["stop_reason"] = "no answer produced"
    return update


def route_unless_stopped(next_node: str) -> Callable[[RunState], str]:
    """A router: go to ``next_node`` unless the run has a stop reason (then finalize)."""

    def route(state: RunState) -> str:
        return "finalize" if state.get("stop_reason") else next_node

    route.__name__ = f"to_{next_node}"
    return route
