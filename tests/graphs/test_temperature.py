"""Every topology samples its solver calls at the run's temperature (like-for-like).

Before, ``single``, ``plan_solve``, subtasks and refinement rounds sent no temperature at all
(the server's default) while parallel branches sent ``RunContext.temperature``, so the
baseline and best-of-N differed in more than the number of samples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from stratagem.agents import (
    DECOMPOSER_PROMPT,
    JUDGE_POINTWISE_PROMPT,
    PLANNER_PROMPT,
    SOLVER_PROMPT,
    ChatRequest,
    Message,
    ModelClient,
)
from stratagem.budgets import Budget
from stratagem.graphs import (
    RunContext,
    adaptive,
    best_of_n,
    decompose_solve,
    plan_solve,
    refine,
    run,
    single,
    tree,
)
from stratagem.testing import FunctionModel

SUBTASKS = [{"id": "1", "description": "six times seven", "depends_on": []},
            {"id": "2", "description": "check it", "depends_on": ["1"]}]


def _respond(messages: Sequence[Message], request: ChatRequest) -> str:
    system = str(messages[0]["content"]) if messages[0]["role"] == "system" else ""
    if system == PLANNER_PROMPT.system:
        return json.dumps({"mode": "sequential", "samples": 1, "rounds": 2, "difficulty": 0.5,
                           "budget_split": {}, "rationale": "think"})
    if system == DECOMPOSER_PROMPT.system:
        return json.dumps({"subtasks": SUBTASKS})
    if system == JUDGE_POINTWISE_PROMPT.system:
        return "Not sure.\nSCORE: 0.3\nVERDICT: reject"
    assert system == SOLVER_PROMPT.system, "a call from an unexpected role"
    return "Answer: 42"


GRAPHS: dict[str, Any] = {
    "single": single,
    "plan_solve": plan_solve,
    "decompose_solve": decompose_solve,
    "best_of_n": lambda: best_of_n(3, select="vote"),
    "refine": lambda: refine(max_rounds=2),
    "tree": lambda: tree(mode="beam", width=1, branching=2, depth=1),
    "adaptive": lambda: adaptive(max_rounds=2),
}


def _solver_temperatures(build: Any, temperature: float | None) -> list[float | None]:
    model = FunctionModel(_respond)
    budget = Budget(total=60_000, roles={"planner": 4_000, "decomposer": 4_000,
                                         "solver": 40_000, "judge": 12_000})
    ctx = RunContext(client=ModelClient(model), budget=budget, temperature=temperature)
    run(build(), "What is 6*7?", context=ctx)
    solver = [r.temperature for r in model.requests
              if r.messages[0]["content"] == SOLVER_PROMPT.system]
    assert solver, "the topology made no solver call"
    return solver


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("temperature", [0.7, 0.0, None])
def test_every_solver_call_samples_at_the_run_temperature(
        name: str, temperature: float | None) -> None:
    assert set(_solver_temperatures(GRAPHS[name], temperature)) == {temperature}
