"""An ordinary LangGraph app (ChatOpenAI, three nodes, a Send fan-out), plus the few lines
that give it stratagem's ledger, a budget and the audit.

    python examples/instrument_langgraph.py --fake              # an in-process model
    python examples/instrument_langgraph.py --base-url URL      # any OpenAI-compatible server
"""

from __future__ import annotations

import argparse
import operator
from typing import Annotated, Any, TypedDict

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from stratagem.budgets import Account, Budget
from stratagem.integrations.langchain import StratagemCallbackHandler, budgeted, end_on_budget
from stratagem.testing import FakeOpenAIServer


class State(TypedDict, total=False):
    question: str
    parts: list[str]
    part: str
    answers: Annotated[list[str], operator.add]
    verdict: str


def build_app(llm: Any) -> Any:
    """The app as its author wrote it (only ``end_on_budget`` is new)."""

    def plan(state: State) -> dict[str, Any]:
        llm.invoke(f"Split into three parts: {state['question']}")
        return {"parts": ["part 1", "part 2", "part 3"]}

    def solve(state: State) -> dict[str, Any]:
        return {"answers": [str(llm.invoke(f"Solve {state['part']}").content)]}

    def judge(state: State) -> dict[str, Any]:
        return {"verdict": str(llm.invoke(f"Best of: {state['answers']}").content)}

    g = StateGraph(State)
    g.add_node("plan", end_on_budget(plan))
    g.add_node("solve", end_on_budget(solve))
    g.add_node("judge", end_on_budget(judge))
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", lambda s: [Send("solve", {"part": p}) for p in s["parts"]],
                            ["solve"])
    g.add_edge("solve", "judge")
    g.add_edge("judge", END)
    return g.compile()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fake", action="store_true", help="run on an in-process fake server")
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--enforce", action="store_true", help="budgeted model, not just observe")
    args = ap.parse_args()
    server = None
    if args.fake:
        server = FakeOpenAIServer(lambda body: "a short answer").start()
        args.base_url = server.base_url
    try:
        chat = ChatOpenAI(model="local", base_url=args.base_url, api_key="none", max_retries=0)
        # -- the few lines stratagem adds ---------------------------------------------------
        roles = {"plan": "planner", "solve": "solver", "judge": "judge"}
        account = Account(budget=Budget(total=4_000, roles={"solver": 2_000}), run_id="demo")
        llm = budgeted(chat, account, backend="llamacpp") if args.enforce else chat
        handler = StratagemCallbackHandler(account, roles=roles)
        build_app(llm).invoke({"question": "What is 12 * 7?"},
                              config={"callbacks": [handler]})
        # -----------------------------------------------------------------------------------
        for role, totals in account.by_role().items():
            print(f"{role:8} calls={totals.calls} tokens={totals.total_tokens}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
