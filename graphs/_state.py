"""Graph state: a TypedDict whose shared keys have commutative reducers.

Parallel branches of one superstep all read the same snapshot and their writes are folded by
the reducers, so every key written by more than one branch is a list to concatenate or a
count to sum. Ledger rows themselves are *not* kept in state (that would re-serialise the
whole ledger at every checkpoint); state holds the ``call_id`` of each accepted call, and the
durable ledger holds every billed one.
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from stratagem.agents import PlanDict, SubtaskDict, VerdictDict

__all__ = [
    "BranchInput",
    "Candidate",
    "CandidateVerdict",
    "RunState",
    "add_counts",
    "first_reason",
    "merge_results",
]


def add_counts(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Reducer: sum per-key counts (token deltas per role). Commutative and associative."""
    out = dict(left or {})
    for key, value in (right or {}).items():
        out[key] = out.get(key, 0) + value
    return out


def merge_results(left: dict[str, str] | None, right: dict[str, str] | None) -> dict[str, str]:
    """Reducer: union of subtask results. Each subtask id is written by one branch only."""
    return {**(left or {}), **(right or {})}


def first_reason(left: str | None, right: str | None) -> str:
    """Reducer: the first stop reason recorded wins (parallel branches may each report one;
    the fold order is LangGraph's deterministic task order)."""
    return left or right or ""


class Candidate(TypedDict, total=False):
    """One candidate answer produced by a solver branch."""

    answer: str
    """The extracted answer."""
    text: str
    """The full reply."""
    branch: str
    """Which branch produced it."""
    round: int
    """The refinement round or tree depth that produced it."""
    parent: int | None
    """Index of the candidate it refines (tree search), if any."""
    mean_logprob: float | None
    """The reply's mean token log-probability, when it was asked for (``None``: unknown)."""


class CandidateVerdict(VerdictDict):
    """A judge's verdict on one candidate, as the run's state keeps it."""

    index: int
    """Index of the candidate judged, in ``RunState.candidates``."""
    by: str
    """Who judged: ``llm`` or ``verifier``."""
    round: int
    """The round (refinement round or tree depth) it was judged in."""


class RunState(TypedDict, total=False):
    """The state every stratagem topology shares."""

    task: str
    """The task text."""
    task_id: str
    """A stable id of the task (for labels and thread ids)."""
    run_id: str
    """The run's id: every ledger row of the run carries it."""
    plan: PlanDict | None
    """The planner's decision (:meth:`Plan.as_dict`), if a planner ran."""
    subtasks: list[SubtaskDict]
    """The decomposition, in order."""
    results: Annotated[dict[str, str], merge_results]
    """Subtask id -> answer."""
    candidates: Annotated[list[Candidate], operator.add]
    """Candidate answers, in deterministic task order."""
    verdicts: Annotated[list[CandidateVerdict], operator.add]
    """Judge verdicts, in order."""
    accepted_calls: Annotated[list[str], operator.add]
    """Call ids of the calls whose output was used (the *accepted* view of the ledger)."""
    accepted_tokens: Annotated[dict[str, int], add_counts]
    """Accepted tokens per role (summed deltas)."""
    budget_moves: Annotated[dict[str, int], add_counts]
    """Net tokens moved into (+) or out of (-) each role by transfers."""
    notes: Annotated[list[str], operator.add]
    """Human-readable events: fallbacks, failed branches, reallocations."""
    failed_calls: Annotated[int, operator.add]
    """Model calls that failed through every retry (the endpoint refused or kept failing,
    or the prompt did not fit); an unreadable reply is not counted: it is an answer."""
    refused_calls: Annotated[int, operator.add]
    """Model calls never made because the budget could not fit even their prompt (a run
    with calls == 0 and refused_calls > 0 made no call at all: its budget fit none)."""
    round: int
    """Refinement round / tree depth reached."""
    extra_samples: int
    """Samples granted by the reallocation policy, not yet drawn."""
    feedback: str | None
    """The latest critique, for the next revision."""
    answer: str
    """The final answer."""
    answer_text: str
    """The full reply the final answer came from (what a checker reads)."""
    score: float | None
    """The final answer's score, if it was scored."""
    stop_reason: Annotated[str, first_reason]
    """Why the run ended: ``done``, ``accepted``, ``budget exhausted: ...``, ..."""


class BranchInput(TypedDict, total=False):
    """What a ``Send`` gives a parallel branch (it does not see the graph state)."""

    task: str
    branch: str
    allowance: int | None
    temperature: float | None
    seed: int | None
    subtask_id: str
    prior_steps: list[tuple[str, str]]
    previous: str | None
    feedback: str | None
    round: int
    parent: int | None
    logprobs: bool
    """Ask the solver for the reply's token log-probabilities."""
