"""The ablation runner: topologies x budgets x policies x seeds x task suites.

Each cell's budget is per task; a policy splits the cell's batch total between its tasks
(the same total for every policy, so cells are at matched compute). Runs go through the real
graphs and the one model client, so every call is in the ledger. Finished runs are recorded
in ``results.sqlite``; a rerun of the same config skips them and resumes interrupted ones
from their checkpoints.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from stratagem.ablation._backends import build_backend
from stratagem.ablation._config import AblationConfig
from stratagem.ablation._records import ROLE_COLUMNS, RunRecord
from stratagem.ablation._results import ResultsStore
from stratagem.agents import ChatBackend, LLMSolver, ModelClient
from stratagem.budgets import (
    AllocationPolicy,
    Budget,
    DifficultyAdaptive,
    JudgeFeedback,
    LedgerStore,
    Pricing,
    TokenLedger,
    Uniform,
    apportion,
)
from stratagem.errors import ConfigError, RunError
from stratagem.graphs import DEFAULT_SPLITS, TOPOLOGIES, RunContext, RunResult, aresume, arun
from stratagem.logging import get_logger
from stratagem.simulate import SimEffects
from stratagem.tasks import Suite, Task, get_suite

__all__ = ["AblationOutcome", "PlannedRun", "plan_runs", "run_ablation"]

_log = get_logger("stratagem.ablation")


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid, fully determined before anything executes."""

    run_id: str
    cell: str
    topology: str
    topology_name: str
    topology_params: dict[str, Any]
    budget: int
    allocated: int
    policy: str
    seed: int
    suite: str
    task: Task


@dataclass
class AblationOutcome:
    """What an ablation did.

    Attributes:
        output: The output folder.
        planned: Runs in the grid.
        ran: Runs executed now (fresh or resumed).
        skipped: Runs already finished before (resumed ablation).
        failed: Runs that ended with an error (recorded, ``correct=False``).
        interrupted: Whether it stopped early (Ctrl-C); rerun to finish.
        simulated: Whether the simulated backend produced the results.
    """

    output: Path
    planned: int
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    simulated: bool = False
    paths: dict[str, Path] = field(default_factory=dict)


def _run_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _suites(config: AblationConfig) -> list[tuple[Suite, list[Task]]]:
    out = []
    for s in config.suites:
        suite = get_suite(s.name, **s.params())
        out.append((suite, suite.generate(s.n, seed=s.seed)))
    return out


def plan_runs(config: AblationConfig,
              suites: Sequence[tuple[Suite, Sequence[Task]]]) -> list[PlannedRun]:
    """Every run of the grid, in a deterministic order (ids are stable across restarts)."""
    runs = []
    policies: dict[str, AllocationPolicy] = {"uniform": Uniform(),
                                             "difficulty_adaptive": DifficultyAdaptive()}
    for topo in config.grid.topologies:
        label = topo.display()
        for budget in config.grid.budgets:
            for policy_name in config.grid.policies:
                cell = f"{label}|{budget}|{policy_name}"
                for seed in config.grid.seeds:
                    for suite, tasks in suites:
                        shares = policies[policy_name].allocate(
                            [t.difficulty for t in tasks], budget * len(tasks))
                        for task, allocated in zip(tasks, shares, strict=True):
                            runs.append(PlannedRun(
                                run_id=_run_id(cell, seed, suite.name, task.id),
                                cell=cell, topology=label, topology_name=topo.name,
                                topology_params=topo.params(), budget=budget,
                                allocated=allocated, policy=policy_name, seed=seed,
                                suite=suite.name, task=task,
                            ))
    return runs


def _split(config: AblationConfig, topology: str, allocated: int) -> dict[str, int]:
    shares = dict(config.run.split or DEFAULT_SPLITS[topology])
    roles = sorted(shares)
    return dict(zip(roles, apportion([shares[r] for r in roles], allocated), strict=True))


def _record(plan: PlannedRun, suite: Suite, result: RunResult | None, ledger: TokenLedger,
            *, wall: float, backend: ChatBackend, error: str | None) -> RunRecord:
    totals = ledger.totals(run_id=plan.run_id)
    by_role = ledger.group_by("role", run_id=plan.run_id)
    answer_text = "" if result is None else result.answer_text
    correct = False if result is None else bool(suite.check(plan.task, answer_text))
    plan_state = {} if result is None else (result.state.get("plan") or {})
    accepted = 0 if result is None else sum(result.accepted_tokens.values())
    roles = [r for r in (*ROLE_COLUMNS, *sorted(set(by_role) - set(ROLE_COLUMNS)))
             if r in by_role]
    return RunRecord(
        run_id=plan.run_id, cell=plan.cell, suite=plan.suite, task_id=plan.task.id,
        difficulty=plan.task.difficulty, topology=plan.topology,
        topology_params=json.dumps(plan.topology_params, sort_keys=True),
        budget=plan.budget, allocated=plan.allocated, policy=plan.policy, seed=plan.seed,
        backend=backend.name, model=backend.model, simulated=backend.name == "simulated",
        correct=correct, score=None if result is None else result.score,
        answer=("" if result is None else result.answer)[:500],
        stop_reason="error" if result is None else result.stop_reason,
        mode=str(plan_state.get("mode") or plan.topology_name), roles_present="+".join(roles),
        tokens_total=totals.total_tokens, prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens, cached_tokens=totals.cached_tokens,
        reasoning_tokens=totals.reasoning_tokens,
        tokens_planner=_role_tokens(by_role, "planner"),
        tokens_decomposer=_role_tokens(by_role, "decomposer"),
        tokens_solver=_role_tokens(by_role, "solver"),
        tokens_judge=_role_tokens(by_role, "judge"),
        accepted_tokens=accepted, waste_tokens=totals.total_tokens - accepted,
        calls=totals.calls, error_calls=totals.error_calls,
        transfers=len(ledger.transfers(plan.run_id)),
        cost_usd=None if totals.cost_unknown else totals.cost_usd, wall_s=wall, error=error,
    )


def _role_tokens(by_role: dict[Any, Any], role: str) -> int:
    return int(by_role[role].total_tokens) if role in by_role else 0


async def run_ablation(
    config: AblationConfig,
    *,
    config_text: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AblationOutcome:
    """Run (or resume) the ablation ``config`` describes; write results, ledger, report.

    Args:
        config: The validated config.
        config_text: The config file's text, copied into the output folder and report.
        on_progress: Called with (finished, total) after every run.

    Raises:
        ConfigError: For a config that cannot run (unknown suite, missing model, ...).
    """
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        (out / "config.toml").write_text(config_text, encoding="utf-8")
    suites = _suites(config)
    all_tasks = [t for _, tasks in suites for t in tasks]
    by_suite = {s.name: s for s, _ in suites}
    planned = plan_runs(config, suites)
    pricing = Pricing.from_toml(config.pricing) if config.pricing else Pricing.default()
    effects = SimEffects(**config.simulation.model_dump())
    backend = build_backend(config.endpoint, all_tasks, effects)
    roles = {r: build_backend(e, all_tasks, effects) for r, e in config.roles.items()}
    concurrency = {b.endpoint: e.max_concurrency
                   for b, e in [(backend, config.endpoint),
                                *((roles[r], config.roles[r]) for r in roles)]
                   if e.max_concurrency}
    outcome = AblationOutcome(out, len(planned), simulated=backend.name == "simulated")
    with LedgerStore(out / "ledger.sqlite") as store, ResultsStore(out / "results.sqlite") as rs:
        ledger = TokenLedger(store)
        client = ModelClient(backend, roles=roles, ledger=ledger, pricing=pricing,
                             concurrency=concurrency)
        done = rs.done()
        todo = [p for p in planned if p.run_id not in done]
        outcome.skipped = len(planned) - len(todo)
        graphs: dict[str, Any] = {}
        sem = asyncio.Semaphore(config.run.concurrency)
        finished = outcome.skipped
        if on_progress:
            on_progress(finished, len(planned))

        async def one(plan: PlannedRun, saver: BaseCheckpointSaver[Any] | None) -> None:
            nonlocal finished
            async with sem:
                graph = graphs.get(plan.topology)
                if graph is None:
                    builder = TOPOLOGIES[plan.topology_name]
                    try:
                        graph = graphs[plan.topology] = builder(**plan.topology_params)
                    except TypeError as exc:
                        raise ConfigError(f"topology {plan.topology_name}: bad parameter: {exc}") \
                            from exc
                suite = by_suite[plan.suite]
                budget = Budget(total=plan.allocated, roles=_split(config,
                                plan.topology_name, plan.allocated), pricing=pricing)
                ctx = RunContext(
                    client=client, budget=budget,
                    solver=LLMSolver(max_output=config.run.max_output),
                    verifier=suite.verifier(plan.task),
                    policy=JudgeFeedback(threshold=config.run.feedback_threshold)
                    if config.run.reallocation == "judge_feedback" else None,
                    temperature=config.run.temperature, seed=plan.seed,
                    labels={"topology": plan.topology, "budget": str(plan.budget),
                            "policy": plan.policy, "seed": str(plan.seed), "suite": plan.suite,
                            "task": plan.task.id, "cell": plan.cell},
                )
                t0 = time.perf_counter()
                result, error = None, None
                try:
                    if saver is not None and await _has_checkpoint(graph, saver, plan.run_id):
                        result = await aresume(graph, plan.run_id, context=ctx, checkpoint=saver)
                    else:
                        result = await arun(graph, plan.task.question, context=ctx,
                                            run_id=plan.run_id, task_id=plan.task.id,
                                            checkpoint=saver)
                except RunError as exc:
                    error = str(exc)
                    outcome.failed += 1
                    _log.warning("ablation.run_failed", run_id=plan.run_id, error=error)
                record = _record(plan, suite, result, ledger, wall=time.perf_counter() - t0,
                                 backend=client.backend_for("solver"), error=error)
                rs.add(record)
                outcome.ran += 1
                finished += 1
                if on_progress:
                    on_progress(finished, len(planned))

        try:
            if config.run.durable:
                async with AsyncSqliteSaver.from_conn_string(str(out / "checkpoints.sqlite")) \
                        as saver:
                    await _gather(todo, saver, one)
            else:
                await _gather(todo, None, one)
        except (KeyboardInterrupt, asyncio.CancelledError):
            outcome.interrupted = True
        finally:
            await client.aclose()
        outcome.paths["results"] = out / "results.sqlite"
        outcome.paths["ledger"] = out / "ledger.sqlite"
        if not outcome.interrupted:
            outcome.paths["csv"] = rs.export_csv(out / "results.csv")
            try:
                outcome.paths["parquet"] = rs.export_parquet(out / "results.parquet")
            except ConfigError as exc:
                _log.warning("ablation.no_parquet", reason=str(exc))
    return outcome


async def _gather(todo: Sequence[PlannedRun], saver: BaseCheckpointSaver[Any] | None,
                  one: Callable[[PlannedRun, BaseCheckpointSaver[Any] | None], Any]) -> None:
    tasks = [asyncio.create_task(one(p, saver)) for p in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _has_checkpoint(graph: Any, saver: BaseCheckpointSaver[Any], thread_id: str) -> bool:
    snapshot = await graph.copy({"checkpointer": saver}).aget_state(
        {"configurable": {"thread_id": thread_id}})
    return bool(snapshot.values)
