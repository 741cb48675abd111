"""Every topology ends gracefully at any budget, from one token to plenty.

"When the budget runs out mid-run the graph ends gracefully with the best answer so far, a
``stop_reason`` and a complete ledger" (README): no budget may turn into a crashed run. Each
topology is swept over budgets from 1 to 1,500 tokens, with and without judge-feedback
reallocation, on a function model that always answers in the expected formats; every run
must return a result with a stop reason, and the budget must have spent what the ledger says
and no more than its total.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from stratagem.agents import (
    DECOMPOSER_PROMPT,
    JUDGE_PAIRWISE_PROMPT,
    JUDGE_POINTWISE_PROMPT,
    PLANNER_PROMPT,
    ChatRequest,
    Message,
    ModelClient,
)
from stratagem.budgets import Budget, JudgeFeedback, apportion
from stratagem.errors import RunError
from stratagem.graphs import DEFAULT_SPLITS, RunContext, best_of_n, refine, run, tree
from stratagem.graphs import TOPOLOGIES as BUILDERS
from stratagem.testing import FunctionModel

BUDGETS = (1, 20, 50, 120, 300, 800, 1500)


def _reply(messages: Sequence[Message], request: ChatRequest) -> str:
    system = messages[0]["content"]
    if system == DECOMPOSER_PROMPT.system:
        return json.dumps({"subtasks": [
            {"id": "1", "description": "first", "depends_on": []},
            {"id": "2", "description": "second", "depends_on": ["1"]}]})
    if system == PLANNER_PROMPT.system:
        return json.dumps({"mode": "parallel", "samples": 3, "rounds": 2, "difficulty": 0.5,
                           "budget_split": {"solver": 0.7, "judge": 0.3}, "rationale": "try"})
    if system == JUDGE_POINTWISE_PROMPT.system:
        return "close but unsure\nSCORE: 0.4\nVERDICT: reject"
    if system == JUDGE_PAIRWISE_PROMPT.system:
        return "the first is clearer\nWINNER: A"
    return "six sevens\nAnswer: 42"


TOPOLOGIES: dict[str, tuple[str, Callable[[], Any]]] = {
    "single": ("single", BUILDERS["single"]),
    "plan_solve": ("plan_solve", BUILDERS["plan_solve"]),
    "decompose_solve": ("decompose_solve", BUILDERS["decompose_solve"]),
    "best_of_n+judge": ("best_of_n", lambda: best_of_n(4, select="judge")),
    "best_of_n+knockout": ("best_of_n", lambda: best_of_n(4, select="knockout")),
    "refine": ("refine", lambda: refine(3)),
    "tree+beam": ("tree", lambda: tree(mode="beam")),
    "tree+mcts": ("tree", lambda: tree(mode="mcts")),
    "adaptive": ("adaptive", BUILDERS["adaptive"]),
}

@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_any_budget_ends_gracefully(name: str) -> None:
    kind, build = TOPOLOGIES[name]
    split = DEFAULT_SPLITS[kind]
    roles = sorted(split)
    failures = []
    for total in BUDGETS:
        for policy in (None, JudgeFeedback()):
            caps = dict(zip(roles, apportion([split[r] for r in roles], total), strict=True))
            budget = Budget(total=total, roles=caps)
            ctx = RunContext(client=ModelClient(FunctionModel(_reply)), budget=budget,
                             policy=policy)
            try:
                result = run(build(), "What is 6*7?", context=ctx)
            except RunError as exc:
                failures.append(f"budget {total}, policy {policy is not None}: {exc}")
                continue
            assert result.stop_reason, (name, total)
            assert budget.spent() == result.billed.total_tokens == \
                ctx.client.ledger.totals().total_tokens
            assert budget.spent() <= total and budget.reserved() == 0, (name, total)
    assert not failures, "\n".join(failures)
