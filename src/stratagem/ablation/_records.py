"""The tidy result of one run: one row per (topology, budget, seed, task)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ROLE_COLUMNS", "RunRecord"]

ROLE_COLUMNS = ("planner", "decomposer", "solver", "judge")
"""Roles with their own token column (``tokens_<role>``); other roles count in the total."""


class RunRecord(BaseModel):
    """One run of one task through one topology at one budget and seed.

    Token columns are *billed* tokens (every attempt), from the ledger; ``accepted_tokens``
    is what the run used and ``waste_tokens`` the difference.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    """The run's id (its ledger rows carry it)."""
    cell: str
    """The grid cell: ``topology|budget|policy`` (seeds and tasks vary within a cell)."""
    suite: str
    """The task suite."""
    task_id: str
    """The task within the suite."""
    difficulty: float | None = None
    """The task's difficulty label in [0, 1], if it has one."""
    topology: str
    """The topology name."""
    topology_params: str = "{}"
    """The topology's parameters, as JSON."""
    budget: int
    """The cell's target budget in tokens per task."""
    allocated: int
    """Tokens this run was allowed (the policy's share of the batch total)."""
    policy: str = "uniform"
    """The allocation policy."""
    seed: int
    """The seed."""
    backend: str
    """The backend kind (``simulated`` for the simulated backend)."""
    model: str
    """The solver's model."""
    simulated: bool = False
    """Whether this row comes from the simulated backend (never mix it up with real runs)."""
    correct: bool | None = None
    """Whether the checker accepted the answer (``None``: no checker)."""
    score: float | None = None
    """The judge's or verifier's score of the final answer, if scored."""
    answer: str = ""
    """The final answer (truncated to 500 characters)."""
    stop_reason: str = ""
    """Why the run ended."""
    mode: str = ""
    """The coordination mode used (the planner's choice for ``adaptive``)."""
    roles_present: str = ""
    """Roles that made at least one call, joined by ``+`` in a fixed order."""
    tokens_total: int = 0
    """Billed tokens, all roles."""
    prompt_tokens: int = 0
    """Billed prompt tokens."""
    completion_tokens: int = 0
    """Billed completion tokens."""
    cached_tokens: int | None = None
    """Cached prompt tokens (``None``: unknown)."""
    reasoning_tokens: int | None = None
    """Reasoning tokens (``None``: unknown)."""
    tokens_planner: int = 0
    """Billed tokens of the planner."""
    tokens_decomposer: int = 0
    """Billed tokens of the decomposer."""
    tokens_solver: int = 0
    """Billed tokens of the solver."""
    tokens_judge: int = 0
    """Billed tokens of the judge."""
    accepted_tokens: int = 0
    """Tokens whose output the run used."""
    waste_tokens: int = 0
    """Billed minus accepted."""
    calls: int = 0
    """HTTP-level calls, failed ones included."""
    error_calls: int = 0
    """Calls that failed."""
    failed_calls: int = 0
    """Model calls lost through every retry (a branch, a judge call or a node: the
    endpoint refused or kept failing, or the prompt did not fit)."""
    transfers: int = 0
    """Budget transfers made during the run."""
    cost_usd: float | None = None
    """Dollar cost (``None``: some price unknown)."""
    wall_s: float = 0.0
    """Wall time of the run."""
    error: str | None = None
    """Why the run itself failed, if it did (then ``correct`` is False)."""
    finished_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    """When the run finished."""
