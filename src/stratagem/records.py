"""Core schemas: the tidy result of one run (one row per topology, budget, seed, task) and the
built-in role names. The ablation runner, the simulator and the reports all read these.

A token path: a model call -> the run's :class:`~stratagem.budgets.Account` -> a ledger row ->
the :class:`~stratagem.graphs.RunResult` -> a :class:`RunRecord` -> the results table (one
``tokens_<role>`` column per role present) -> attribution -> the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BUILTIN_ROLES", "RECORD_COLUMNS", "ROLE_COLUMNS", "RunRecord", "records_frame",
           "role_order"]

BUILTIN_ROLES = ("planner", "decomposer", "solver", "judge")
"""The four built-in roles, in their fixed order. Users may add their own (a ``critic``):
every role a run's calls name gets its tokens in :attr:`RunRecord.role_tokens` and a
``tokens_<role>`` column in the results table."""

ROLE_COLUMNS = BUILTIN_ROLES
"""Roles whose ``tokens_<role>`` column is always present (zero when unused)."""


def role_order(roles: Iterable[str]) -> list[str]:
    """Roles in the fixed order: the built-in ones first, then the others by name."""
    names = set(roles)
    return [r for r in BUILTIN_ROLES if r in names] + sorted(names - set(BUILTIN_ROLES))


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
    """The roles the topology's design uses (``graphs.design_roles``), joined by ``+`` in a
    fixed order: the same for every run of a cell with the same mode, whether or not the
    budget let each role call (a coordination variable, not an outcome)."""
    roles_called: str = ""
    """Roles that made at least one call, joined by ``+`` in a fixed order."""
    candidates: str = ""
    """A digest of the candidate answers the run generated (their texts, in branch order;
    empty: none): two runs with the same digest chose among the same candidates, which is
    what a paired judge comparison needs."""
    temperature: float | None = None
    """The solver's sampling temperature (``None``: the server's default)."""
    no_call: bool = False
    """The run made no model call because its budget could not fit one (not a failure of
    the model: the cell's budget is too small for the topology)."""
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
    role_tokens: dict[str, int] = Field(default_factory=dict)
    """Billed tokens of every role that made a call, built-in or the user's (``critic``);
    the results table has one ``tokens_<role>`` column per role present."""
    accepted_tokens: int = 0
    """Tokens whose output the run used."""
    waste_tokens: int = 0
    """Billed minus accepted."""
    calls: int = 0
    """HTTP-level calls, failed ones included."""
    error_calls: int = 0
    """Calls that failed."""
    refused_calls: int = 0
    """Calls the budget could not fit (never sent)."""
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

    @model_validator(mode="before")
    @classmethod
    def _roles_of_older_records(cls, data: Any) -> Any:
        # Records written before role_tokens existed: the four columns are the whole story.
        if isinstance(data, dict) and not data.get("role_tokens"):
            known = {r: int(data.get(f"tokens_{r}") or 0) for r in BUILTIN_ROLES}
            data = {**data, "role_tokens": {r: n for r, n in known.items() if n}}
        return data


RECORD_COLUMNS: tuple[str, ...] = tuple(f for f in RunRecord.model_fields if f != "role_tokens")
"""The results table's columns when only built-in roles made calls (a user's role adds a
``tokens_<role>`` column after ``tokens_judge``)."""


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """A DataFrame with one row per run: every :class:`RunRecord` field, with the per-role
    tokens spread into one ``tokens_<role>`` column per role present (built-in ones always),
    placed after ``tokens_judge``."""
    rows = [r.model_dump() for r in records]
    extra = role_order({role for row in rows for role in row["role_tokens"]}
                       - set(BUILTIN_ROLES))
    for row in rows:
        tokens = row.pop("role_tokens")
        row.update({f"tokens_{r}": int(tokens.get(r, 0)) for r in extra})
    at = RECORD_COLUMNS.index("tokens_judge") + 1
    columns = [*RECORD_COLUMNS[:at], *(f"tokens_{r}" for r in extra), *RECORD_COLUMNS[at:]]
    return pd.DataFrame(rows, columns=columns)
