"""Graph state is typed: plans, subtasks and verdicts have TypedDicts that match the role
outputs they come from, and the role protocols name every keyword they take."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

from stratagem.agents import (
    Decomposer,
    Judge,
    LLMDecomposer,
    LLMJudge,
    LLMPlanner,
    LLMSolver,
    ModelClient,
    Plan,
    PlanDict,
    Planner,
    Solver,
    Subtask,
    SubtaskDict,
    Verdict,
    VerdictDict,
    VerifierJudge,
    knockout,
)
from stratagem.graphs import CandidateVerdict, RunContext, RunState, best_of_n, run
from stratagem.testing import FunctionModel


def _keys(typed: Any) -> set[str]:
    return set(typed.__required_keys__) | set(typed.__optional_keys__)


@pytest.mark.parametrize(
    ("value", "typed"),
    [
        (Plan(mode="parallel", samples=3, budget_split={"solver": 2, "judge": 1},
              rationale="vote"), PlanDict),
        (Subtask(id="2", description="add", depends_on=["1"]), SubtaskDict),
        (Verdict(score=0.8, verdict="accept", rationale="fine"), VerdictDict),
    ],
)
def test_as_dict_is_the_typed_model_dump(value: Any, typed: Any) -> None:
    assert value.as_dict() == value.model_dump()
    assert _keys(typed) == set(type(value).model_fields)


def test_run_state_has_no_untyped_values() -> None:
    hints = typing.get_type_hints(RunState, include_extras=True)
    assert hints["plan"] == PlanDict | None
    assert typing.get_args(hints["subtasks"]) == (SubtaskDict,)
    verdicts, _reducer = typing.get_args(hints["verdicts"])
    assert typing.get_args(verdicts) == (CandidateVerdict,)
    assert _keys(CandidateVerdict) == _keys(VerdictDict) | {"index", "by", "round"}


def test_a_judged_run_writes_verdicts_of_that_shape() -> None:
    def reply(messages: Any, request: Any) -> str:
        text = messages[-1]["content"]
        return "Looks right.\nSCORE: 0.9\nVERDICT: accept" if "SCORE" in text else "Answer: 4"

    result = run(best_of_n(2, select="judge"), "What is 2 + 2?",
                 context=RunContext(client=ModelClient(FunctionModel(reply))))
    verdicts = result.state["verdicts"]
    assert len(verdicts) == 2
    assert all(set(v) == _keys(CandidateVerdict) for v in verdicts)


# What ModelClient.complete takes that is the caller's business, not the role's own.
# (``logprobs`` is a probe's signal of the solver's replies: only the solver takes it.)
_ROLE_OWNED = {"self", "messages", "role", "max_output", "logprobs"}
_CALL_OPTIONS = set(inspect.signature(ModelClient.complete).parameters) - _ROLE_OWNED


@pytest.mark.parametrize(
    "method",
    [Planner.plan, LLMPlanner.plan, Decomposer.decompose, LLMDecomposer.decompose,
     Solver.solve, LLMSolver.solve, Judge.score, Judge.compare, LLMJudge.score,
     LLMJudge.compare, VerifierJudge.score, VerifierJudge.compare, knockout],
    ids=lambda m: m.__qualname__,
)
def test_role_methods_name_every_keyword(method: Any) -> None:
    params = inspect.signature(method).parameters
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert named >= _CALL_OPTIONS, _CALL_OPTIONS - named
    if method in (Solver.solve, LLMSolver.solve):
        assert "logprobs" in named
