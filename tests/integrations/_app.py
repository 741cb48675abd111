"""A small LangGraph app written the ordinary way: plan, a Send fan-out of solvers, a judge."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send


class State(TypedDict, total=False):
    question: str
    parts: list[str]
    part: str
    answers: Annotated[list[str], operator.add]
    verdict: str


def build(model: BaseChatModel, *, fanout: int = 3, wrap: Any = None) -> Any:
    """The app; ``wrap`` (if given) wraps each node function (e.g. ``end_on_budget``)."""
    w = wrap or (lambda f: f)

    def plan(state: State) -> dict[str, Any]:
        model.invoke(f"Split into {fanout} parts: {state['question']}")
        return {"parts": [f"part {i}" for i in range(fanout)]}

    def fan(state: State) -> list[Send]:
        return [Send("solve", {"part": p}) for p in state["parts"]]

    def solve(state: State) -> dict[str, Any]:
        return {"answers": [str(model.invoke(f"Solve {state['part']}").content)]}

    def judge(state: State) -> dict[str, Any]:
        reply = model.invoke(f"Pick the best of {len(state['answers'])} answers",
                             config={"tags": ["role:judge"]})
        return {"verdict": str(reply.content)}

    g = StateGraph(State)
    g.add_node("plan", w(plan))
    g.add_node("solve", w(solve))
    g.add_node("judge", w(judge))
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan, ["solve"])
    g.add_edge("solve", "judge")
    g.add_edge("judge", END)
    return g.compile()
