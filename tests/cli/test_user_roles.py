"""A topology of the user's own, with a role of the user's own ("critic"), in an ablation:
its tokens reach the run records, ``results.csv``, ``stratagem audit`` and the report."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stratagem.ablation import parse_config, report_ablation, run_ablation
from stratagem.budgets import LedgerStore
from stratagem.errors import ConfigError
from stratagem.graphs import RunSpec, resolve_topology

USER_TOPOLOGY = '''
from typing import Any

from langgraph.graph import END, START, StateGraph

from stratagem.graphs import RunContext, RunState, accepted, finalize_node, stratagem_node


@stratagem_node
async def solve(state: RunState, ctx: RunContext) -> dict[str, Any]:
    solution = await ctx.solver.solve(ctx.client, state["task"], node="solve", seed=ctx.seed)
    return {"candidates": [{"answer": solution.answer, "text": solution.text, "branch": "0"}],
            **accepted(solution)}


@stratagem_node
async def critic(state: RunState, ctx: RunContext) -> dict[str, Any]:
    draft = state["candidates"][-1]["text"]
    said = await ctx.client.complete([{"role": "user", "content": f"Critique: {draft}"}],
                                     role="critic", max_output=48)
    return {"notes": [said.text[:80]], **accepted(said)}


def critic_loop(rounds: int = 1) -> Any:
    builder = StateGraph(RunState, context_schema=RunContext)
    builder.add_node("solve", solve)
    builder.add_node("critic", critic)
    builder.add_node("finalize", finalize_node)
    builder.add_edge(START, "solve")
    builder.add_edge("solve", "critic")
    builder.add_edge("critic", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile()
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "my_graphs.py").write_text(textwrap.dedent(USER_TOPOLOGY), encoding="utf-8")
    monkeypatch.syspath_prepend(str(pkg))
    return "my_graphs:critic_loop"


def test_a_user_role_reaches_results_audit_and_report(tmp_path: Path, user_module: str,
                                                      cli: Callable[..., Any]) -> None:
    out = tmp_path / "out"
    config = parse_config({
        "name": "user-roles", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": ["single", {"name": user_module, "label": "critic_loop"}],
                 "budgets": [800], "policies": ["uniform"], "seeds": [0]},
        "suites": [{"name": "arith", "n": 3, "depth": [2, 4]}],
    })
    asyncio.run(run_ablation(config))

    results = pd.read_csv(out / "results.csv")
    assert "tokens_critic" in results.columns
    mine = results[results["topology"] == "critic_loop"]
    assert (mine["tokens_critic"] > 0).all() and (mine["roles_present"] == "solver+critic").all()
    assert (results[results["topology"] == "single"]["tokens_critic"] == 0).all()
    with LedgerStore(out / "ledger.sqlite") as store:
        critic_rows = store.entries(role="critic")
    assert sum(r.total_tokens for r in critic_rows) == int(mine["tokens_critic"].sum())
    # the per-run totals still add up, the user's role included
    assert (mine["tokens_total"] == mine["tokens_solver"] + mine["tokens_critic"]).all()

    report = report_ablation(out)
    assert "critic" in report.html.read_text(encoding="utf-8")

    audit = cli("audit", out)
    assert audit.code == 0, audit.err
    assert "critic" in audit.out


def test_an_unknown_user_topology_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        resolve_topology("no_such_module:graph")
    with pytest.raises(ConfigError, match="module:function"):
        RunSpec("q", topology="nonsense")
    with pytest.raises(ConfigError, match="module:function"):
        parse_config({"output": str(tmp_path / "o"), "grid": {"topologies": ["nonsense"],
                      "budgets": [100]}, "suites": [{"name": "arith", "n": 1}]})
    assert not (tmp_path / "o").exists()
