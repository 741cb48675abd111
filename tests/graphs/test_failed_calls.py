"""Model calls lost through every retry are counted in the run's state (``failed_calls``),
wherever the graph absorbs them: a parallel branch, a judge call, a node."""

from __future__ import annotations

from collections.abc import Sequence

from stratagem.agents import JUDGE_POINTWISE_PROMPT, ChatRequest, Message, ModelClient
from stratagem.errors import ModelError
from stratagem.graphs import RunContext, best_of_n, run, single
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"


def is_judge(messages: Sequence[Message]) -> bool:
    return bool(messages) and messages[0].get("content") == JUDGE_POINTWISE_PROMPT.system


def test_a_lost_branch_and_a_lost_judge_call_are_counted() -> None:
    judged: list[int] = []

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if is_judge(messages):
            judged.append(1)
            if len(judged) == 1:
                raise ModelError("HTTP 503: overloaded", status_code=400)
            return "Looks right.\nSCORE: 0.9\nVERDICT: accept"
        if request.seed is not None and request.seed % 3 == 1:
            raise ModelError("HTTP 401: the endpoint refused the key", status_code=401)
        return "Six sevens.\nAnswer: 42"

    result = run(best_of_n(3, select="judge"), TASK,
                 context=RunContext(client=ModelClient(FunctionModel(respond)), seed=0))
    assert result.answer == "42"
    assert result.state["failed_calls"] == 2  # one branch, one judge call


def test_a_lost_node_call_is_counted_and_an_unreadable_verdict_is_not() -> None:
    def refuse(messages: Sequence[Message], request: ChatRequest) -> str:
        raise ModelError("HTTP 401: the endpoint refused the key", status_code=401)

    lost = run(single(), TASK, context=RunContext(client=ModelClient(FunctionModel(refuse))))
    assert lost.stop_reason.startswith("model failed") and lost.state["failed_calls"] == 1

    def mumble(messages: Sequence[Message], request: ChatRequest) -> str:
        return "I am not sure what to say." if is_judge(messages) else "Answer: 42"

    unread = run(best_of_n(2, select="judge"), TASK,
                 context=RunContext(client=ModelClient(FunctionModel(mumble))))
    assert unread.state.get("failed_calls", 0) == 0  # the judge answered; it is unreadable
    assert any("unreadable" in note for note in unread.state["notes"])
