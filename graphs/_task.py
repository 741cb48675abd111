"""``run_task``: one task through one topology, from a small typed spec.

``stratagem run`` and the ablation runner both go through :func:`arun_task`, so "what one run
is" (the graph, the budget and its split between roles, the policy, the seed and the labels)
is written once::

    spec = RunSpec("What is 6*7?", topology="best_of_n", params={"n": 4}, budget=2000)
    result = run_task(spec, ModelClient(backend))
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from stratagem.agents import ModelClient, Solver
from stratagem.budgets import Budget, JudgeFeedback, Pricing, ReallocationPolicy, apportion
from stratagem.errors import ConfigError
from stratagem.graphs._context import DEFAULT_SPLITS, RunContext, Verifier
from stratagem.graphs._run import Checkpoint, RunResult, _saver, aresume, arun
from stratagem.graphs._topologies import check_params, resolve_topology

__all__ = ["RunSpec", "arun_task", "run_task", "split_budget"]


@dataclass(frozen=True)
class RunSpec:
    """What one run needs, besides the model client.

    Attributes:
        task: The task text.
        topology: A name in :data:`~stratagem.graphs.TOPOLOGIES`, or your own builder as
            ``"module:function"``.
        params: The topology builder's parameters (checked by name and type).
        budget: The run's token budget; ``None`` for no limit.
        split: Each role's share of the budget (the topology's default split if omitted;
            a topology of your own without a split has the total as its only cap).
        policy: ``"judge_feedback"``, a :class:`~stratagem.budgets.ReallocationPolicy`, or
            ``None`` for no reallocation.
        feedback_threshold: The judge score below which ``"judge_feedback"`` moves budget.
        seed: Sampling seed (branch ``i`` uses ``seed + i``).
        temperature: Sampling temperature of every solver call.
        labels: Stamped on every ledger row of the run.
        run_id: The run's id (a fresh one if omitted); with a checkpoint, also its thread.
        task_id: A stable id of the task (kept in state).
        solver: The solver role (the default LLM solver if omitted).
        verifier: A programmatic checker of answers, if the task has one.
        pricing: The price table of the budget (the client's account's if omitted).
    """

    task: str
    topology: str = "single"
    params: Mapping[str, Any] = field(default_factory=dict)
    budget: int | None = None
    split: Mapping[str, float] | None = None
    policy: str | ReallocationPolicy | None = None
    feedback_threshold: float = 0.5
    seed: int | None = 0
    temperature: float | None = 0.8
    labels: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    task_id: str | None = None
    solver: Solver | None = None
    verifier: Verifier | None = None
    pricing: Pricing | None = None

    def __post_init__(self) -> None:
        resolve_topology(self.topology)  # a clear error for an unknown one
        if self.budget is not None and (isinstance(self.budget, bool) or self.budget < 1):
            raise ConfigError(f"a run's budget is a positive number of tokens, got "
                              f"{self.budget!r}")
        if isinstance(self.policy, str) and self.policy not in ("none", "judge_feedback"):
            raise ConfigError(f"policy must be none or judge_feedback, got {self.policy!r}")
        if not self.task.strip():
            raise ConfigError("the task is empty: give the question to run")

    def build_graph(self) -> Any:
        """The compiled topology.

        Raises:
            ConfigError: For a parameter the topology does not take, or a wrong type.
        """
        return resolve_topology(self.topology)(**check_params(self.topology, dict(self.params)))

    def make_budget(self, pricing: Pricing | None = None) -> Budget | None:
        """A fresh budget with this spec's total and role caps (``None``: no limit)."""
        if self.budget is None:
            return None
        shares = self.split or DEFAULT_SPLITS.get(self.topology) or {}
        caps = split_budget(self.budget, shares) if shares else {}
        return Budget(total=self.budget, roles=caps, pricing=self.pricing or pricing)

    def make_policy(self) -> ReallocationPolicy | None:
        """The reallocation policy."""
        if self.policy is None or self.policy == "none":
            return None
        if self.policy == "judge_feedback":
            return JudgeFeedback(threshold=self.feedback_threshold)
        assert not isinstance(self.policy, str)
        return self.policy

    def context(self, client: ModelClient) -> RunContext:
        """The run's context on ``client``, with a fresh budget."""
        ctx = RunContext(client=client, budget=self.make_budget(client.pricing),
                         verifier=self.verifier, policy=self.make_policy(),
                         temperature=self.temperature, seed=self.seed,
                         labels=dict(self.labels))
        if self.solver is not None:
            ctx.solver = self.solver
        return ctx


def split_budget(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Role caps that add up to ``total``, in proportion to ``shares``.

    Raises:
        ConfigError: If a share is negative or not a number, or every share is zero.
    """
    for role, share in shares.items():
        if isinstance(share, bool) or not isinstance(share, int | float) \
                or not math.isfinite(share) or share < 0:
            raise ConfigError(f"split {role}={share!r}: a share is a non-negative number, "
                              "e.g. solver=0.8")
    if shares and sum(shares.values()) <= 0:
        raise ConfigError("every role's share of the budget is 0: give at least one role a "
                          "positive share")
    roles = sorted(shares)
    return dict(zip(roles, apportion([float(shares[r]) for r in roles], total), strict=True))


async def arun_task(spec: RunSpec, client: ModelClient, *, checkpoint: Checkpoint = None,
                    graph: Any = None, max_concurrency: int | None = None) -> RunResult:
    """Run ``spec`` on ``client``; with a checkpoint holding the run, finish it instead.

    Args:
        spec: What to run.
        client: Makes and records the calls (its account's ledger gets the rows).
        checkpoint: An SQLite path or a saver, for a durable run; if it already holds
            ``spec.run_id``'s thread, the run is resumed.
        graph: The compiled topology, when the caller reuses one across runs.
        max_concurrency: Cap on parallel branches.

    Raises:
        ConfigError: For a bad spec.
        RunError: If the run failed in a way the topology could not absorb.
    """
    graph = graph if graph is not None else spec.build_graph()
    ctx = spec.context(client)
    if checkpoint is not None and spec.run_id is not None:
        async with _saver(checkpoint) as saver:
            assert saver is not None  # (a checkpoint was given)
            if await _has_checkpoint(graph, saver, spec.run_id):
                return await aresume(graph, spec.run_id, context=ctx, checkpoint=saver,
                                     max_concurrency=max_concurrency)
            return await arun(graph, spec.task, context=ctx, run_id=spec.run_id,
                              task_id=spec.task_id, checkpoint=saver,
                              max_concurrency=max_concurrency)
    return await arun(graph, spec.task, context=ctx, run_id=spec.run_id, task_id=spec.task_id,
                      checkpoint=checkpoint, max_concurrency=max_concurrency)


def run_task(spec: RunSpec, client: ModelClient | None = None, **kwargs: Any) -> RunResult:
    """Blocking :func:`arun_task`, in an event loop of its own (closed at the end). Without
    a client, one on the default backend (the environment's endpoint or the embedded
    model) with an in-memory ledger."""
    client = client if client is not None else ModelClient()

    async def once() -> RunResult:
        try:
            return await arun_task(spec, client, **kwargs)
        finally:
            await client.aclose()

    return asyncio.run(once())


async def _has_checkpoint(graph: Any, saver: BaseCheckpointSaver[Any], thread_id: str) -> bool:
    snapshot = await graph.copy({"checkpointer": saver}).aget_state(
        {"configurable": {"thread_id": thread_id}})
    return bool(snapshot.values)
