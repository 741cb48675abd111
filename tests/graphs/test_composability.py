"""Users' own graphs: a node built with ``stratagem_node`` gets ledger attribution for free.

Also runs ``examples/custom_graph.py --fake`` end to end, as a user would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from stratagem.agents import ChatRequest, Message, ModelClient
from stratagem.budgets import Budget
from stratagem.errors import ModelError
from stratagem.graphs import (
    RunContext,
    RunState,
    accepted,
    finalize_node,
    run,
    stratagem_node,
)
from stratagem.testing import FunctionModel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_graph.py"
CRITIC_SYSTEM = "You are a critic."


@stratagem_node
async def solve(state: RunState, ctx: RunContext) -> dict[str, Any]:
    solution = await ctx.solver.solve(ctx.client, state["task"], node="solve", seed=ctx.seed)
    return {"candidates": [{"answer": solution.answer, "text": solution.text, "branch": "0"}],
            **accepted(solution)}


@stratagem_node
async def critic(state: RunState, ctx: RunContext) -> dict[str, Any]:
    reply = await ctx.client.complete(
        [{"role": "system", "content": CRITIC_SYSTEM},
         {"role": "user", "content": state["candidates"][-1]["text"]}],
        role="critic", node="critic", max_output=64)
    return {"notes": [f"critic said: {reply.text}"], **accepted(reply)}


def user_graph() -> Any:
    builder = StateGraph(RunState, context_schema=RunContext)
    builder.add_node("solve", solve)
    builder.add_node("critic", critic)
    builder.add_node("finalize", finalize_node)
    builder.add_edge(START, "solve")
    builder.add_edge("solve", "critic")
    builder.add_edge("critic", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile().with_config(recursion_limit=6)


def respond(messages: Sequence[Message], request: ChatRequest) -> str:
    if messages[0]["content"] == CRITIC_SYSTEM:
        return "Looks right to me."
    return "6 times 7.\nAnswer: 42"


def test_a_user_node_is_attributed_in_the_ledger() -> None:
    budget = Budget(total=5_000, roles={"solver": 3_000, "critic": 1_000})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget,
                     labels={"suite": "mine"})
    result = run(user_graph(), "What is 6*7?", context=ctx, thread_id="my-thread")

    assert (result.answer, result.stop_reason) == ("42", "done")
    assert "critic said: Looks right to me." in result.notes
    rows = ctx.client.ledger.entries(run_id=result.run_id)
    assert [(e.role, e.node) for e in rows] == [("solver", "solve"), ("critic", "critic")]
    for e in rows:
        assert (e.run_id, e.thread_id) == (result.run_id, "my-thread")
        assert e.labels == {"suite": "mine"}
        assert e.task_id  # the LangGraph task that made the call
    assert rows[0].task_id != rows[1].task_id
    critic_tokens = rows[1].total_tokens
    assert critic_tokens > 0
    assert result.by_role["critic"].total_tokens == critic_tokens
    assert result.accepted_tokens == {"solver": rows[0].total_tokens, "critic": critic_tokens}
    assert budget.spent("critic") == critic_tokens  # the user role is budgeted too
    assert result.waste_tokens == 0


def test_a_user_node_out_of_budget_ends_the_run_gracefully() -> None:
    budget = Budget(total=5_000, roles={"solver": 3_000, "critic": 20})
    ctx = RunContext(client=ModelClient(FunctionModel(respond)), budget=budget)
    result = run(user_graph(), "What is 6*7?", context=ctx)
    assert result.stop_reason.startswith("budget exhausted: budget exceeded for role 'critic'")
    assert result.answer == "42"  # the solver's candidate survives
    assert [e.role for e in ctx.client.ledger.entries()] == ["solver"]
    assert budget.spent("critic") == 0


def test_a_model_failure_in_a_user_node_is_a_note_and_a_stop_reason() -> None:
    def failing(messages: Sequence[Message], request: ChatRequest) -> str:
        if messages[0]["content"] == CRITIC_SYSTEM:
            raise ModelError("400 bad request: no critics allowed", status_code=400)
        return respond(messages, request)

    ctx = RunContext(client=ModelClient(FunctionModel(failing)))
    result = run(user_graph(), "What is 6*7?", context=ctx)
    assert result.stop_reason.startswith("model failed: 400 bad request")
    assert any(n.startswith("critic: 400 bad request") for n in result.notes)
    critic_rows = ctx.client.ledger.entries(role="critic")
    assert [(e.node, e.status) for e in critic_rows] == [("critic", "error")]
    assert result.billed.error_calls == 1


def test_the_example_runs_and_audits_the_user_role() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--fake"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "answer: 42" in out
    table = {m["role"]: (int(m["calls"]), int(m["tokens"]), int(m["accepted"]))
             for m in re.finditer(r"^(?P<role>\w+)\s+(?P<calls>\d+)\s+(?P<tokens>\d+)\s+"
                                  r"(?P<accepted>\d+)$", out, flags=re.MULTILINE)}
    assert set(table) == {"critic", "solver", "total"}
    calls, tokens, _ = table["critic"]
    assert calls == 1 and tokens > 0
    assert table["solver"][0] == 2  # words first, then digits after the format check
    assert table["total"][1] == table["critic"][1] + table["solver"][1]
    waste = re.search(r"^waste: (\d+) tokens", out, flags=re.MULTILINE)
    assert waste is not None and int(waste[1]) == table["total"][1] - table["total"][2]
