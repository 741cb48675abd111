"""The ablation runner: topologies x budgets x policies x seeds x task suites.

Each cell's budget is per task; a policy splits the cell's batch total between its tasks
(the same total for every policy, so cells are at matched compute). Runs go through the real
graphs and one model client per process, so every call is in the ledger.

:func:`run_ablation` is the *driver*: it plans the grid, hands the unfinished runs to an
executor (:mod:`stratagem.ablation._executors`: in this process, or on a Ray cluster) and is
the only writer of the output folder. Each finished run's ledger rows are appended first and
its record last; a run is done once its record is in ``results.sqlite``, so a rerun of the
same config skips it, and resumes interrupted ones (from their checkpoints, locally).

A run *needs a retry* (:func:`needs_retry`) when it lost model calls to endpoint failures or
failed outright; ``retry_failed=True`` reruns exactly those, asking the failed calls again
(see :func:`run_ablation`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from stratagem._sqlite import connect_readonly
from stratagem.ablation._calibrate import calibrate, calibration_key
from stratagem.ablation._config import AblationConfig, TopologyConfig
from stratagem.ablation._executors import Executor, LocalExecutor
from stratagem.ablation._results import ResultsStore
from stratagem.agents import (
    ChatBackend,
    EndpointConfig,
    LLMSolver,
    ModelClient,
    build_backend,
    check_endpoint,
)
from stratagem.budgets import (
    AccountEvent,
    AdaptiveConsistency,
    AllocationPolicy,
    CalibrationTable,
    ComputeOptimal,
    LedgerEntry,
    LedgerStore,
    Pricing,
    TokenLedger,
    Transfer,
    group_entries,
    sum_entries,
)
from stratagem.errors import ConfigError, LedgerFormatError, RunError
from stratagem.graphs import (
    DEFAULT_SPLITS,
    RunResult,
    RunSpec,
    arun_task,
    check_params,
    compute_optimal,
    design_roles,
    resolve_topology,
    split_budget,
)
from stratagem.logging import get_logger
from stratagem.records import RunRecord, role_order
from stratagem.tasks import Suite, Task, get_suite

__all__ = [
    "AblationOutcome",
    "BackendWrapper",
    "PlannedRun",
    "RunOutcome",
    "Sweep",
    "check_output_folder",
    "needs_retry",
    "plan_runs",
    "run_ablation",
]

_log = get_logger("stratagem.ablation")

POLICY_GRAPHS: dict[str, Callable[..., Any]] = {"compute_optimal": compute_optimal}
"""Graphs a policy runs in place of a grid topology (never named by a config)."""

BackendWrapper = Callable[[ChatBackend, EndpointConfig], ChatBackend]
"""Wraps each backend a process builds, given the endpoint config it came from (the Ray
executor uses it to put a cluster-wide concurrency limit around ``send``)."""


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
    retry: int = 0
    """0 for a first execution; N for the N-th rerun by ``retry_failed`` (the rows of the
    calls it makes carry the label ``retry=N``)."""
    temperature: float | None = None
    """The solver's sampling temperature (the topology's, else ``[run] temperature``)."""
    graph_name: str | None = None
    """The graph actually run when the cell's policy changes how the topology samples
    (``adaptive_consistency`` runs a voting ``best_of_n`` under its stopping rule); ``None``:
    ``topology_name`` itself. The budget split stays the grid topology's (matched budgets)."""
    graph_params: dict[str, Any] | None = None
    """That graph's parameters."""
    limit: int | None = None
    """The run's hard budget when its policy may spend past its share (``compute_optimal``
    chooses per query, meeting the batch's total in expectation); ``None``: ``allocated``."""


@dataclass(frozen=True)
class RunOutcome:
    """One finished run, as an executor hands it to the driver.

    Attributes:
        record: The run's tidy row; the driver stores it last, which marks the run done.
        entries: The run's ledger rows, when they were recorded in another process's
            in-memory ledger; empty when they are already in the driver's durable ledger.
        transfers: The run's budget transfers, likewise.
    """

    record: RunRecord
    entries: tuple[LedgerEntry, ...] = ()
    transfers: tuple[Transfer, ...] = ()


@dataclass
class AblationOutcome:
    """What an ablation did.

    Attributes:
        output: The output folder.
        planned: Runs in the grid.
        ran: Runs executed now (fresh or resumed).
        skipped: Runs already finished before (resumed ablation).
        failed: Runs that ended with an error (recorded, ``correct=False``).
        lost_calls: Runs that finished but lost model calls through every retry (e.g. an
            endpoint outage): their results say less than they seem to.
        retried: Runs rerun now by ``retry_failed``.
        to_retry: Run ids of the planned runs in the folder that, once this call is done,
            still lost calls or failed (:func:`needs_retry`): the runs ``retry_failed``
            would rerun. The CLI exits 1 when there are any.
        failed_attempts: Ledger rows of those runs with status ``error`` or ``cancelled``.
        interrupted: Whether it stopped early (Ctrl-C); rerun to finish.
        simulated: Whether the simulated backend produced the results.
        executor: The executor that ran them (``local``, ``ray``).
    """

    output: Path
    planned: int
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    lost_calls: int = 0
    retried: int = 0
    to_retry: list[str] = field(default_factory=list)
    failed_attempts: int = 0
    interrupted: bool = False
    simulated: bool = False
    paths: dict[str, Path] = field(default_factory=dict)
    executor: str = "local"


def _run_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _suites(config: AblationConfig) -> list[tuple[Suite, list[Task]]]:
    out: list[tuple[Suite, list[Task]]] = []
    for i, s in enumerate(config.suites):
        suite = get_suite(s.name, **s.params())
        first = next((j for j, (other, _) in enumerate(out) if other.name == suite.name), None)
        if first is not None:
            # Records, run ids, checkers and examples are all found by the suite's name.
            raise ConfigError(
                f"suites[{first}] and suites[{i}] are both the suite {suite.name!r}: their "
                "runs would be mixed up. Run the two variants as separate ablations (a jsonl "
                "suite takes its own `name`)"
            )
        out.append((suite, suite.generate(s.n, seed=s.seed)))
    return out


def plan_runs(config: AblationConfig,
              suites: Sequence[tuple[Suite, Sequence[Task]]],
              calibration: Mapping[str, Mapping[str, Any]] | None = None) -> list[PlannedRun]:
    """Every run of the grid, in a deterministic order (ids are stable across restarts).

    ``calibration`` holds the fitted tables of ``compute_optimal`` policies (by
    :func:`calibration_key`); without them such runs are planned but cannot execute.
    """
    runs = []
    policies: dict[str, AllocationPolicy] = {p.display(): p.build()
                                             for p in config.grid.policies}
    for topo in config.grid.topologies:
        label = topo.display()
        for budget in config.grid.budgets:
            for policy_name, policy in policies.items():
                cell = f"{label}|{budget}|{policy_name}"
                for seed in config.grid.seeds:
                    for suite, tasks in suites:
                        shares = policy.allocate(
                            [t.difficulty for t in tasks], budget * len(tasks))
                        graph = _under_policy(policy, topo.name, topo.params())
                        limit = None
                        if isinstance(policy, ComputeOptimal) and topo.name == "best_of_n":
                            graph, limit = _compute_optimal_graph(
                                policy, config, topo, policy_name, suite.name, budget,
                                calibration or {})
                        for task, allocated in zip(tasks, shares, strict=True):
                            runs.append(PlannedRun(
                                limit=None if limit is None else max(limit, allocated),
                                run_id=_run_id(cell, seed, suite.name, task.id),
                                cell=cell, topology=label, topology_name=topo.name,
                                topology_params=topo.params(), budget=budget,
                                allocated=allocated, policy=policy_name, seed=seed,
                                suite=suite.name, task=task,
                                temperature=topo.sampling_temperature(config.run),
                                graph_name=None if graph is None else graph[0],
                                graph_params=None if graph is None else graph[1],
                            ))
    return runs


def _under_policy(policy: AllocationPolicy, name: str,
                  params: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The graph a policy runs in place of topology ``name``, or ``None`` for the topology.

    Adaptive-Consistency applies to majority voting: a ``best_of_n`` with ``select = "vote"``
    runs as ``adaptive_consistency`` with its ``n`` as the cap on samples. Other topologies
    run unchanged (a verifier's early stop, or a single sample, needs no vote).
    """
    if not isinstance(policy, AdaptiveConsistency) or name != "best_of_n":
        return None
    defaults = inspect.signature(resolve_topology("best_of_n")).parameters
    if params.get("select", defaults["select"].default) != "vote":
        return None
    n = int(params.get("n", defaults["n"].default))
    return "adaptive_consistency", {
        "max_samples": n, "threshold": policy.threshold, "batch": min(policy.batch, n),
        "min_samples": min(policy.min_samples, n), "criterion": policy.criterion}


def _compute_optimal_graph(
    policy: ComputeOptimal, config: AblationConfig, topo: TopologyConfig, label: str,
    suite: str, budget: int, calibration: Mapping[str, Mapping[str, Any]],
) -> tuple[tuple[str, dict[str, Any]], int]:
    """The ``compute_optimal`` graph of one cell, and its runs' hard cap in tokens.

    The token price is set so the calibration mix's expected solver spend per query equals
    the solver's share of the cell's budget per task (the batch's total, in expectation).
    """
    verifier = topo.params().get("select", "vote") == "verifier"
    key = calibration_key(label, suite, verifier, topo.sampling_temperature(config.run))
    limit = int(policy.cap * budget)
    table = calibration.get(key)
    if table is None:
        return ("compute_optimal", {}), limit
    shares = config.run.split or DEFAULT_SPLITS["best_of_n"]
    share = split_budget(budget, shares).get("solver", budget)
    solver_cap = policy.cap * share
    fitted = CalibrationTable.from_json(table)
    price = fitted.price_for(share, solver_cap)
    return ("compute_optimal", {"table": dict(table), "price": price,
                                "cap_tokens": solver_cap,
                                "threshold": policy.threshold}), limit


@dataclass(frozen=True)
class Sweep:
    """Everything needed to execute runs of one ablation, in this process or another.

    Picklable by design, so an executor can ship it to worker processes: the config, the
    suites with the tasks drawn from them, and the prices (read on the driver). It holds
    descriptions, never live clients: each process builds its own backends from the endpoint
    configs when it executes runs (:meth:`execute`).

    Attributes:
        config: The validated config.
        suites: Each suite with the tasks drawn from it.
        pricing: Prices for ``cost_usd``.
        examples: The solver's few-shot examples, by suite name (suites with
            ``few_shot = 0`` have none).
    """

    config: AblationConfig
    suites: tuple[tuple[Suite, tuple[Task, ...]], ...]
    pricing: Pricing
    examples: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    calibration: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Fitted ``compute_optimal`` tables by :func:`calibration_key` (see :meth:`calibrated`)."""

    @classmethod
    def from_config(cls, config: AblationConfig) -> Sweep:
        """Draw the tasks and read the prices a config names.

        Raises:
            ConfigError: For an unknown suite, bad suite parameters, a bad price file, or
                an endpoint that cannot be built (no model, no key).
        """
        for where, endpoint in (("endpoint", config.endpoint),
                                *((f"roles.{r}", e) for r, e in config.roles.items())):
            try:
                check_endpoint(endpoint)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        for i, topo in enumerate(config.grid.topologies):
            try:  # a bad parameter is the user's mistake: refuse it before anything runs
                resolve_topology(topo.name)(**check_params(topo.name, topo.params()))
            except ConfigError as exc:
                raise ConfigError(f"grid.topologies[{i}] ({topo.display()}): bad parameter: "
                                  f"{exc}") from exc
        suites = tuple((suite, tuple(tasks)) for suite, tasks in _suites(config))
        examples = {}
        for i, (spec, (suite, tasks)) in enumerate(zip(config.suites, suites, strict=True)):
            if spec.few_shot:
                try:
                    examples[suite.name] = tuple(suite.demonstrations(
                        spec.few_shot, exclude={t.question for t in tasks}, seed=spec.seed))
                except ConfigError as exc:
                    raise ConfigError(f"suites[{i}].few_shot: {exc}") from exc
        pricing = Pricing.from_toml(config.pricing) if config.pricing else Pricing.default()
        return cls(config, suites, pricing, examples)

    def plan(self) -> list[PlannedRun]:
        """Every run of the grid (see :func:`plan_runs`)."""
        return plan_runs(self.config, self.suites, self.calibration)

    def needs_calibration(self) -> bool:
        """Whether a ``compute_optimal`` policy applies to a cell of the grid."""
        return any(p.name == "compute_optimal" for p in self.config.grid.policies) and any(
            t.name == "best_of_n" for t in self.config.grid.topologies)

    async def calibrated(self, ledger: TokenLedger, out: Path) -> Sweep:
        """This sweep with its ``compute_optimal`` tables fitted (or read back from ``out``);
        calibration calls are recorded in ``ledger``."""
        if not self.needs_calibration():
            return self
        return dataclasses.replace(self, calibration=await calibrate(self, ledger, out))

    def endpoints(self) -> dict[str, EndpointConfig]:
        """The endpoint configs in use: ``""`` for the default, then per-role overrides."""
        return {"": self.config.endpoint, **self.config.roles}

    def backends(
        self, wrap: BackendWrapper | None = None, *, extra_tasks: Sequence[Task] = ()
    ) -> tuple[ChatBackend, dict[str, ChatBackend], dict[str, int]]:
        """This process's backends: the default, one per overridden role, and the explicit
        per-endpoint concurrency limits for :class:`~stratagem.agents.ModelClient`.

        Raises:
            ConfigError: If a remote endpoint has no model.
        """
        # extra_tasks: tasks outside the grid (a calibration split) the simulator must know.
        tasks = [*(t for _, ts in self.suites for t in ts), *extra_tasks]
        effects = self.config.simulation

        def build(endpoint: EndpointConfig) -> ChatBackend:
            backend = build_backend(endpoint, tasks, effects)
            return backend if wrap is None else wrap(backend, endpoint)

        default = build(self.config.endpoint)
        roles = {r: build(e) for r, e in self.config.roles.items()}
        pairs = [(default, self.config.endpoint),
                 *((roles[r], self.config.roles[r]) for r in roles)]
        limits = {b.endpoint: e.max_concurrency for b, e in pairs if e.max_concurrency}
        return default, roles, limits

    async def execute(
        self,
        plans: Sequence[PlannedRun],
        *,
        ledger: TokenLedger,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        wrap: BackendWrapper | None = None,
        ship_rows: bool = False,
    ) -> AsyncGenerator[RunOutcome, None]:
        """Run ``plans`` in this process, ``config.run.concurrency`` at a time, through one
        model client; yield each outcome as its run finishes.

        Args:
            plans: The runs to execute.
            ledger: Where the client records every call.
            checkpointer: Checkpoints for durable runs; a run with a checkpoint resumes.
            wrap: Applied to every backend built here.
            ship_rows: Put each run's ledger rows and transfers on its outcome (for a
                ledger that is not the driver's).

        Raises:
            ConfigError: For a topology parameter its builder does not accept.
        """
        default, roles, limits = self.backends(wrap)
        client = ModelClient(default, roles=roles, ledger=ledger, pricing=self.pricing,
                             concurrency=limits)
        by_suite = {s.name: s for s, _ in self.suites}
        solvers = {s.name: LLMSolver(max_output=self.config.run.max_output,
                                     examples=self.examples.get(s.name, ()))
                   for s, _ in self.suites}
        graphs: dict[str, Any] = {}
        sem = asyncio.Semaphore(self.config.run.concurrency)

        async def one(plan: PlannedRun) -> RunOutcome:
            async with sem:
                record = await self._run(plan, by_suite[plan.suite], solvers[plan.suite],
                                         client, graphs, checkpointer)
            if not ship_rows:
                return RunOutcome(record)
            return RunOutcome(record, tuple(ledger.entries(run_id=plan.run_id)),
                              tuple(ledger.transfers(plan.run_id)))

        tasks = [asyncio.create_task(one(p)) for p in plans]
        try:
            for finished in asyncio.as_completed(tasks):
                yield await finished
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()

    async def _run(self, plan: PlannedRun, suite: Suite, solver: LLMSolver,
                   client: ModelClient, graphs: dict[str, Any],
                   saver: BaseCheckpointSaver[Any] | None) -> RunRecord:
        config = self.config
        name = plan.graph_name or plan.topology_name
        params = plan.topology_params if plan.graph_params is None else plan.graph_params
        # A policy's graph depends on the policy (and, for compute_optimal, the budget):
        # one per cell. A topology's own graph is shared by all its cells.
        key = plan.topology if plan.graph_name is None else f"{plan.cell}@{name}"
        graph = graphs.get(key)
        if graph is None:
            builder = POLICY_GRAPHS.get(name) or resolve_topology(name)
            params = _with_judge(name, params, config.run.judge_with)
            try:
                graph = graphs[key] = builder(**params)
            except TypeError as exc:
                raise ConfigError(f"topology {plan.topology_name}: bad parameter: {exc}") \
                    from exc
        spec = RunSpec(
            plan.task.question, topology=plan.topology_name, params=plan.topology_params,
            budget=plan.allocated if plan.limit is None else plan.limit,
            split=config.run.split or None,
            policy=config.run.reallocation, feedback_threshold=config.run.feedback_threshold,
            seed=plan.seed,
            temperature=config.run.temperature if plan.temperature is None
            else plan.temperature,
            labels={"topology": plan.topology, "budget": str(plan.budget),
                    "policy": plan.policy, "seed": str(plan.seed), "suite": plan.suite,
                    "task": plan.task.id, "cell": plan.cell,
                    **({"retry": str(plan.retry)} if plan.retry else {})},
            run_id=plan.run_id, task_id=plan.task.id, solver=solver,
            verifier=suite.verifier(plan.task), pricing=self.pricing,
        )
        t0 = time.perf_counter()
        result, error = None, None
        if plan.retry and saver is not None:
            # A retry runs from the start, replaying what succeeded (see run_ablation): the
            # finished checkpoint would only return the failed execution's end state.
            await saver.adelete_thread(plan.run_id)
        try:
            result = await arun_task(spec, client, checkpoint=saver, graph=graph)
        except RunError as exc:
            error = str(exc)
            _log.warning("ablation.run_failed", run_id=plan.run_id, error=error)
        return _record(plan, suite, result, client.ledger, wall=time.perf_counter() - t0,
                       backend=client.backend_for("solver"), error=error,
                       judge_with=config.run.judge_with)


def _with_judge(name: str, params: Mapping[str, Any], judge_with: str) -> dict[str, Any]:
    """``params`` with ``[run] judge_with`` for a topology that takes ``judge_with`` and was
    not given its own (``refine``, ``tree``, ``adaptive``); others are left as they are."""
    if name in POLICY_GRAPHS or "judge_with" in params \
            or "judge_with" not in inspect.signature(resolve_topology(name)).parameters:
        return dict(params)
    return {**params, "judge_with": judge_with}


def _record(plan: PlannedRun, suite: Suite, result: RunResult | None, ledger: TokenLedger,
            *, wall: float, backend: ChatBackend, error: str | None,
            judge_with: str = "llm") -> RunRecord:
    """The run's record: its totals are the run result's (one execution's rows: a call
    in flight when an earlier execution died is in the ledger as ``lost``, not here)."""
    account_rows = [e for e in ledger.entries(run_id=plan.run_id) if e.status != "lost"]
    totals = sum_entries(account_rows) if result is None else result.billed
    by_role = group_entries(account_rows, "role") if result is None else result.by_role
    answer_text = "" if result is None else result.answer_text
    correct = False if result is None else bool(suite.check(plan.task, answer_text))
    plan_state = {} if result is None else (result.state.get("plan") or {})
    accepted = 0 if result is None else sum(result.accepted_tokens.values())
    called = role_order(str(r) for r in by_role)
    role_tokens = {r: int(by_role[r].total_tokens) for r in called}
    name = plan.graph_name or plan.topology_name
    mode = str(plan_state.get("mode") or name)
    design = design_roles(name, _with_judge(name, plan.topology_params if plan.graph_params
                                            is None else plan.graph_params, judge_with),
                          mode=mode if name == "adaptive" else None)
    refused = 0 if result is None else int(result.state.get("refused_calls", 0))
    return RunRecord(
        run_id=plan.run_id, cell=plan.cell, suite=plan.suite, task_id=plan.task.id,
        difficulty=plan.task.difficulty, topology=plan.topology,
        topology_params=json.dumps(plan.topology_params, sort_keys=True),
        budget=plan.budget, allocated=plan.allocated, policy=plan.policy, seed=plan.seed,
        backend=backend.name, model=backend.model, simulated=backend.name == "simulated",
        correct=correct, score=None if result is None else result.score,
        answer=("" if result is None else result.answer)[:500],
        stop_reason="error" if result is None else result.stop_reason,
        # A builder of the user's own has no known design: its roles are those that called.
        mode=mode, roles_present="+".join(called if design is None else design),
        roles_called="+".join(called), candidates=_candidates_digest(result),
        temperature=plan.temperature, no_call=totals.calls == 0 and refused > 0,
        tokens_total=totals.total_tokens, prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens, cached_tokens=totals.cached_tokens,
        reasoning_tokens=totals.reasoning_tokens,
        tokens_planner=role_tokens.get("planner", 0),
        tokens_decomposer=role_tokens.get("decomposer", 0),
        tokens_solver=role_tokens.get("solver", 0), tokens_judge=role_tokens.get("judge", 0),
        role_tokens=role_tokens,
        accepted_tokens=accepted, waste_tokens=totals.total_tokens - accepted,
        calls=totals.calls, error_calls=totals.error_calls,
        refused_calls=refused,
        failed_calls=0 if result is None else int(result.state.get("failed_calls", 0)),
        transfers=len(ledger.transfers(plan.run_id)),
        cost_usd=None if totals.cost_unknown else totals.cost_usd, wall_s=wall, error=error,
    )


def _candidates_digest(result: RunResult | None) -> str:
    # Texts, not answers: two judges compare like for like only on identical candidates.
    cands = [] if result is None else list(result.state.get("candidates") or [])
    if not cands:
        return ""
    texts = [str(c.get("text", "")) for c in cands]
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


async def run_ablation(
    config: AblationConfig,
    *,
    config_text: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    executor: Executor | None = None,
    retry_failed: bool = False,
    on_event: Callable[[AccountEvent], None] | None = None,
) -> AblationOutcome:
    """Run (or resume) the ablation ``config`` describes; write results, ledger, report.

    Args:
        config: The validated config.
        config_text: The config file's text, copied into the output folder and report.
        on_progress: Called with (finished, total) after every run.
        on_event: Called with every ledger row (``CallRecorded``) and budget move
            (``TransferRecorded``) as this process records it, the same events
            :func:`stratagem.graphs.astream` yields (rows shipped back by Ray workers
            arrive when their batch does).
        executor: Where the runs execute (:class:`LocalExecutor` by default; see
            :class:`RayExecutor`). Whatever it is, this process alone writes the output.
        retry_failed: Rerun exactly the finished runs of the existing output folder that
            need a retry (:func:`needs_retry`), and nothing else. Each runs again from the
            start (its checkpoint is dropped): the model calls that succeeded replay from
            the ledger, charged as then and not sent again, and the calls recorded as
            failed through every retry are asked again (their new rows carry the label
            ``retry=N``). Its new record replaces the old one and counts every row of the
            run, the failed attempts included: they were billed.

    Raises:
        ConfigError: For a config that cannot run (unknown suite, missing model, ...), or
            ``retry_failed`` without an output folder that has results.
    """
    executor = executor if executor is not None else LocalExecutor()
    # Every check first: a config that cannot run creates nothing, and a refused one leaves
    # an existing folder byte-identical.
    sweep = Sweep.from_config(config)
    out = config.output
    settings = run_settings(sweep)
    check_output_folder(out, settings)
    if retry_failed and not (out / "results.sqlite").is_file():
        raise ConfigError(f"--retry-failed reruns the failed runs of an existing output "
                          f"folder, and {out} has no results: run without --retry-failed")
    out.mkdir(parents=True, exist_ok=True)
    planned = sweep.plan()
    outcome = AblationOutcome(out, len(planned), executor=executor.name,
                              simulated=config.endpoint.backend == "simulated")
    # Results first: the file that decides what is done is opened before a ledger is made.
    with ResultsStore(out / "results.sqlite") as rs, LedgerStore(out / "ledger.sqlite") as store:
        reconcile_settings(rs, settings)  # again, under the lock: a refusal runs nothing
        if config_text is not None:
            (out / "config.toml").write_text(config_text, encoding="utf-8")
        ledger = TokenLedger(store)
        if sweep.needs_calibration():
            sweep = await sweep.calibrated(ledger, out)
            planned = sweep.plan()  # the same runs and ids, now with their fitted graphs
        if on_event is not None:
            ledger.subscribe(on_event)
        if retry_failed:
            retry = {r.run_id for r in rs.records() if needs_retry(r)}
            todo = [replace(p, retry=_next_retry(ledger, p.run_id))
                    for p in planned if p.run_id in retry]
            for plan in todo:
                _ask_failures_again(ledger, plan.run_id)
            outcome.retried = len(todo)
        else:
            done = rs.done()
            todo = [p for p in planned if p.run_id not in done]
        outcome.skipped = len(planned) - len(todo)
        finished = outcome.skipped
        if on_progress:
            on_progress(finished, len(planned))
        checkpoints = out / "checkpoints.sqlite" if config.run.durable else None
        try:
            async with aclosing(executor.execute(sweep, todo, ledger=ledger,
                                                 checkpoints=checkpoints)) as results:
                async for result in results:
                    _write(ledger, rs, result, replace=retry_failed)
                    outcome.ran += 1
                    outcome.failed += result.record.error is not None
                    outcome.lost_calls += (result.record.error is None
                                           and result.record.failed_calls > 0)
                    finished += 1
                    if on_progress:
                        on_progress(finished, len(planned))
        except (KeyboardInterrupt, asyncio.CancelledError):
            outcome.interrupted = True
        planned_ids = {p.run_id for p in planned}
        outcome.to_retry = [r.run_id for r in rs.records()
                            if r.run_id in planned_ids and needs_retry(r)]
        outcome.failed_attempts = sum(
            e.status != "ok" for run_id in outcome.to_retry
            for e in ledger.entries(run_id=run_id))
        outcome.paths["results"] = out / "results.sqlite"
        outcome.paths["ledger"] = out / "ledger.sqlite"
        if not outcome.interrupted:
            outcome.paths["csv"] = rs.export_csv(out / "results.csv")
            try:
                outcome.paths["parquet"] = rs.export_parquet(out / "results.parquet")
            except ConfigError as exc:
                _log.warning("ablation.no_parquet", reason=str(exc))
    return outcome


_ENDPOINT_FIELDS = ("backend", "base_url", "model")
"""What an endpoint answers with; keys, timeouts and concurrency do not change an answer."""

_MISSING = object()


def run_settings(sweep: Sweep) -> dict[str, str]:
    """What a finished run's outcome depends on beyond its id, by scope, as JSON.

    A run id names the cell (topology label, budget, policy label), seed, suite and task, so
    growing the grid only adds runs. These settings are not in it: finished runs made with
    other ones would be skipped and mixed with new ones. Scopes: ``run`` (each role's
    endpoint, run settings, planted effects), ``suite:<name>`` (the suite's table and a
    digest of the tasks drawn, so a JSONL file edited in place counts as a change),
    ``topology:<label>`` and ``policy:<label>`` (their parameters). Prices are not in it:
    ``cost_usd`` follows the table of the run that made each record.
    """
    config = sweep.config
    roles = {role: config.roles.get(role, config.endpoint)
             for role in ("planner", "decomposer", "solver", "judge")}
    run: dict[str, Any] = {
        "endpoints": {r: e.model_dump(mode="json", include=set(_ENDPOINT_FIELDS))
                      for r, e in roles.items()},
        "run": config.run.model_dump(mode="json", exclude={"concurrency", "durable"}),
    }
    if any(e.backend == "simulated" for e in roles.values()):
        run["simulation"] = config.simulation.model_dump(mode="json")
    out = {"run": json.dumps(run, sort_keys=True)}
    for spec, (suite, tasks) in zip(config.suites, sweep.suites, strict=True):
        drawn = hashlib.sha256(json.dumps(
            [[t.id, t.question, t.answer, t.difficulty] for t in tasks]).encode()).hexdigest()
        table = spec.model_dump(mode="json", exclude={"path"})
        out[f"suite:{suite.name}"] = json.dumps({**table, "tasks": drawn[:16]}, sort_keys=True)
    for topo in config.grid.topologies:
        out[f"topology:{topo.display()}"] = json.dumps(
            {"name": topo.name, **topo.params()}, sort_keys=True)
    for policy in config.grid.policies:
        out[f"policy:{policy.display()}"] = json.dumps(
            policy.model_dump(mode="json", exclude={"label"}), sort_keys=True)
    return out


def _changed(before: Any, now: Any, where: str) -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        return [change for key in sorted(before.keys() | now.keys())
                for change in _changed(before.get(key, _MISSING), now.get(key, _MISSING),
                                       f"{where}.{key}" if where else str(key))]
    if before is _MISSING or now is _MISSING or before == now:
        return []  # a setting one version records and another does not: nothing to compare
    return [f"{where or 'value'} was {json.dumps(before)}, is {json.dumps(now)}"]


def _scope_label(scope: str) -> str:
    kind, _, name = scope.partition(":")
    return {"run": "", "suite": f"suites ({name})", "topology": f"topology {name!r}",
            "policy": f"policy {name!r}"}[kind]


def _refuse_changed_settings(results: ResultsStore, settings: Mapping[str, str]) -> None:
    recorded = results.settings()
    used = results.scopes_in_use()
    changes = []
    for scope, now in settings.items():
        if scope in recorded and scope in used and recorded[scope] != now:
            changes += _changed(json.loads(recorded[scope]), json.loads(now),
                                _scope_label(scope))
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more"
                                          if len(changes) > 4 else "")
        raise ConfigError(
            f"{results.path.parent} holds finished runs made with other settings "
            f"({shown}): they would be skipped and mixed with runs made with these. Give "
            "this config a new `output` folder (or `--output`), or change the settings back"
        )


def reconcile_settings(results: ResultsStore, settings: Mapping[str, str]) -> None:
    """Refuse to add runs made with other settings to an output folder's finished ones;
    record the settings of scopes no finished run depends on yet.

    Raises:
        ConfigError: Naming each setting that changed, and the fixes.
    """
    with results.exclusive():
        _refuse_changed_settings(results, settings)
        recorded = results.settings()
        used = results.scopes_in_use()
        # Scopes no run depends on yet take these settings; so do scopes of a folder written
        # before settings were recorded (its runs' own cannot be known: these resume it).
        results.record_settings({k: v for k, v in settings.items()
                                 if k not in used or k not in recorded})


def check_output_folder(out: Path, settings: Mapping[str, str] | None = None) -> None:
    """Refuse an output folder an ablation cannot write into, reading it only: nothing is
    created or changed, so a refusal leaves it byte-identical.

    Checked: ``out`` is a folder (or does not exist yet); the ``results.sqlite``,
    ``ledger.sqlite`` and ``checkpoints.sqlite`` in it, if any, are files of their kind that
    this stratagem reads; and, given ``settings`` (:func:`run_settings`), that its finished
    runs were made with them.

    Raises:
        ConfigError: Naming the file and the fix.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file, not a folder: give `output` (or "
                          "--output) a folder path")
    if not out.is_dir():
        return
    hint = "give this config a new `output` folder (or --output), or remove the file"
    results, ledger, checkpoints = (out / "results.sqlite", out / "ledger.sqlite",
                                    out / "checkpoints.sqlite")

    def there(path: Path) -> bool:  # an empty file is a new database to SQLite: no check
        return path.exists() and (not path.is_file() or path.stat().st_size > 0)

    try:
        if there(results):
            with ResultsStore(results, readonly=True) as rs:
                if settings is not None:
                    _refuse_changed_settings(rs, settings)
        if there(ledger):
            LedgerStore(ledger, readonly=True).close()
    except LedgerFormatError as exc:
        raise ConfigError(f"{exc}; {hint}") from exc
    if there(checkpoints):
        try:
            connect_readonly(checkpoints).close()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ConfigError(f"{checkpoints} is not a checkpoint file ({exc}); {hint}") \
                from exc


def needs_retry(record: RunRecord) -> bool:
    """Whether a finished run lost model calls to endpoint failures, or failed: the runs
    ``stratagem ablate --retry-failed`` reruns, and the reason it exits 1.

    A run *lost calls* when a model call failed through every retry of the client and the
    graph went on without it (``failed_calls > 0``: a lost branch, judge verdict or node).
    Every attempt of such a call is a ledger row with status ``error`` (the endpoint's HTTP
    status or transport error: refused, 429/5xx, timeout, connection, malformed reply) or
    ``cancelled`` (cut short when its run stopped). A reply that did not parse is not lost
    (the model answered), nor is a call the budget refused. A run *failed* when it raised
    (``error`` is set, ``correct`` is False). Either way its record says less than it seems.
    """
    return record.failed_calls > 0 or record.error is not None


def _ask_failures_again(ledger: TokenLedger, run_id: str) -> None:
    # A rerun replays every recorded outcome, a failure included ("fails the same way");
    # a retry is there to ask those again. An outcome without call ids does not replay, so
    # each failure is kept, nested, under a marker; its rows are charged, not replayed.
    for key, outcome in ledger.replies(run_id).items():
        if "error" in outcome and "call_ids" in outcome:
            ledger.record_reply(run_id, key, {"asked_again": outcome})


def _next_retry(ledger: TokenLedger, run_id: str) -> int:
    # One more than any execution the ledger has seen, an interrupted rerun's included.
    seen = [int(e.labels.get("retry", "0") or 0) for e in ledger.entries(run_id=run_id)]
    return max(seen, default=0) + 1


def _write(ledger: TokenLedger, results: ResultsStore, outcome: RunOutcome, *,
           replace: bool = False) -> None:
    # Rows first, record last: a crash in between leaves the rows of a run that is not done
    # (it reruns; those calls were billed, so the ledger keeps them), never a done run whose
    # calls are missing. Rows the ledger already has (recorded live) are skipped by id.
    ledger.extend(outcome.entries)
    for transfer in outcome.transfers:
        ledger.record_transfer(transfer)
    results.add(outcome.record, replace=replace)


