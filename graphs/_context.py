"""Run-scoped dependencies, passed to LangGraph as the runtime context (never checkpointed).

A resumed run must be given its context again: the client (bound to the run), the budget
(rebuilt from the ledger by :func:`~stratagem.graphs.resume`), the role implementations and
the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stratagem.agents import (
    JUDGE_OUTCOME_PROMPT,
    Decomposer,
    Judge,
    LLMDecomposer,
    LLMJudge,
    LLMPlanner,
    LLMSolver,
    ModelClient,
    Planner,
    Solver,
    VerifierJudge,
)
from stratagem.budgets import Account, Budget, ReallocationPolicy
from stratagem.errors import ConfigError

__all__ = ["DEFAULT_SPLITS", "RunContext", "Verifier"]

Verifier = Callable[[str], bool | float]
"""A programmatic checker: answer text -> pass/fail or a score in [0, 1]."""

DEFAULT_SPLITS: Mapping[str, Mapping[str, float]] = {
    "single": {"solver": 1.0},
    "plan_solve": {"planner": 0.15, "solver": 0.85},
    "decompose_solve": {"decomposer": 0.15, "solver": 0.85},
    "best_of_n": {"solver": 0.8, "judge": 0.2},
    "refine": {"solver": 0.6, "judge": 0.4},
    "tree": {"solver": 0.6, "judge": 0.4},
    "adaptive": {"planner": 0.1, "decomposer": 0.1, "solver": 0.6, "judge": 0.2},
    "adaptive_consistency": {"solver": 1.0},
}
"""How a run's token budget is split between roles by default, per topology."""


@dataclass
class RunContext:
    """Everything a topology's nodes need besides the state.

    Attributes:
        client: Makes every model call, recorded through its account (bound to this run's
            id, ledger and budget when the run starts).
        budget: The run's budget; ``None`` for no limit.
        planner: The planner role.
        decomposer: The decomposer role.
        solver: The solver role.
        judge: The judge role (an LLM judge by default, which reasons before it scores).
        outcome_judge: The outcome-only judge (score, no rationale) of ``best_of_n``'s
            ``judge="outcome"``: the control of a reasoning judge.
        verifier: A programmatic checker; when set, ``judge_with="verifier"`` uses it (the
            "perfect verifier" ablation) and :class:`~stratagem.budgets.JudgeFeedback` may
            stop early when it accepts.
        policy: Moves budget between roles on the judge's signal; ``None`` for none.
        temperature: Sampling temperature of every solver call, in every topology (one
            sample, parallel branches, subtasks, revisions), so topologies compare like for
            like; ``0`` is greedy decoding, ``None`` leaves it to the server's default.
            Planner, decomposer and judge calls keep the server's default.
        seed: Base seed; branch ``i`` uses ``seed + i`` so runs are reproducible.
        labels: Extra labels for every ledger row of the run.
        logprob_samples: Parallel solver samples of branch below this ask for their token
            log-probabilities (``Candidate.mean_logprob``): a probe's samples, when a probe
            signal is fitted on a calibration split. They cost CPU on some servers, so only
            those that are read are asked.
    """

    client: ModelClient
    budget: Budget | None = None
    planner: Planner = field(default_factory=LLMPlanner)
    decomposer: Decomposer = field(default_factory=LLMDecomposer)
    solver: Solver = field(default_factory=LLMSolver)
    judge: Judge = field(default_factory=LLMJudge)
    outcome_judge: Judge = field(default_factory=lambda: LLMJudge(JUDGE_OUTCOME_PROMPT,
                                                                  max_output=24))
    verifier: Verifier | None = None
    policy: ReallocationPolicy | None = None
    temperature: float | None = 0.8
    seed: int | None = 0
    labels: dict[str, str] = field(default_factory=dict)
    logprob_samples: int = 0

    @property
    def account(self) -> Account:
        """The run's account (the client's): it records every call and budget move."""
        return self.client.account

    def judge_for(self, judge_with: str) -> Judge:
        """The judge to use: ``"llm"`` (the configured judge) or ``"verifier"``."""
        if judge_with == "verifier":
            if self.verifier is None:
                raise ConfigError(
                    "judge_with='verifier' needs a verifier: pass RunContext(verifier=...) "
                    "(a task's checker) or use judge_with='llm'"
                )
            return VerifierJudge(self.verifier)
        return self.judge

    def branch_seed(self, branch: int) -> int | None:
        """The sampling seed of parallel branch ``branch``."""
        return None if self.seed is None else self.seed + branch

    def extra(self) -> dict[str, Any]:
        """Keyword arguments every role call gets (labels)."""
        return {"labels": self.labels} if self.labels else {}
