"""The calibration split of a ``compute_optimal`` policy: drawn, sampled once, fitted, saved.

For each such policy, each suite and each kind of ``best_of_n`` cell it applies to (with a
verifier or voting, at a temperature), the policy's ``calibration`` tasks are drawn apart
from the evaluated tasks and their few-shot examples (:meth:`Suite.draw_apart`), and each is
sampled ``max(samples)`` times at every seed of the grid, with the same branch seeds, solver
and temperature as the evaluated runs. Every call goes through the run's model client into
the ledger (label ``phase = calibration``): calibration is billed, and ``stratagem audit``
shows it. With a log-probability probe signal, the probe's samples (the first ``probe`` of
each pool) ask for ``logprobs``, as the evaluated runs' probes do. Options that cannot be read
off a pool (``refine:R``, ``decompose``, opt-in) are *run*: the ``compute_optimal`` graph with
that option forced, after the same probe, on each calibration query whose probe was not
verified, its every call in the ledger with the calibration's labels (and ``option``).
The fitted :class:`~stratagem.budgets.CalibrationTable` is written to
``calibration-<policy>-<suite>-<kind>.json`` in the output folder and reused by later runs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratagem.agents import LLMSolver, ModelClient
from stratagem.budgets import CalibrationTable, ComputeOptimal, PoolSample, TokenLedger
from stratagem.errors import ConfigError, RunError
from stratagem.graphs import RunContext, answer_key, arun, best_of_n, compute_optimal
from stratagem.logging import get_logger
from stratagem.tasks import Suite, Task

if TYPE_CHECKING:
    from stratagem.ablation._runner import Sweep

__all__ = ["calibrate", "calibration_key"]

_log = get_logger("stratagem.ablation")

_DEFAULT = ComputeOptimal()

_Wanted = tuple[ComputeOptimal, Suite, tuple[Task, ...], bool, float | None, int]
"""The policy, suite, evaluated tasks, verifier or not, temperature and draw seed."""


def calibration_key(policy: str, suite: str, verifier: bool, temperature: float | None) -> str:
    """The key of one calibration table (policy label, suite, kind, temperature)."""
    return f"{policy}|{suite}|{'verifier' if verifier else 'vote'}|{temperature}"


def _file(out: Path, key: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80]
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return out / f"calibration-{slug}-{digest}.json"


async def calibrate(sweep: Sweep, ledger: TokenLedger, out: Path) -> dict[str, dict[str, Any]]:
    """Fit (or read back) every table the sweep's ``compute_optimal`` policies need.

    Args:
        sweep: The :class:`~stratagem.ablation.Sweep`.
        ledger: Where calibration calls are recorded.
        out: The output folder (tables are saved and reused there).

    Returns:
        :func:`calibration_key` -> the table's JSON form.

    Raises:
        ConfigError: If a suite has too few questions apart from the evaluated ones, or a
            saved table was fitted with other settings.
    """
    config = sweep.config
    wanted: dict[str, _Wanted] = {}
    for p in config.grid.policies:
        if p.name != "compute_optimal":
            continue
        built = p.build()
        if not isinstance(built, ComputeOptimal):  # pragma: no cover - the config's contract
            raise ConfigError(f"policy {p.display()} is not a compute_optimal policy")
        for topo in config.grid.topologies:
            if topo.name != "best_of_n":
                continue
            verifier = topo.params().get("select", "vote") == "verifier"
            temperature = topo.sampling_temperature(config.run)
            for suite_spec, (suite, tasks) in zip(config.suites, sweep.suites, strict=True):
                key = calibration_key(p.display(), suite.name, verifier, temperature)
                wanted[key] = (built, suite, tasks, verifier, temperature, suite_spec.seed)
    tables: dict[str, dict[str, Any]] = {}
    todo: dict[str, _Wanted] = {}
    for key, spec in wanted.items():
        path = _file(out, key)
        if path.exists():
            table = CalibrationTable.load(path)
            co = spec[0]
            if (table.probe, table.verifier, table.meta.get("samples"),
                    table.meta.get("calibration"), table.meta.get("seeds"), table.signal,
                    table.meta.get("logprob_bins", 3),
                    table.meta.get("options", list(_DEFAULT.options)),
                    table.meta.get("rounds", list(_DEFAULT.rounds))) != (
                    co.probe, spec[3], list(co.samples), co.calibration,
                    list(config.grid.seeds), co.probe_signal, co.logprob_bins,
                    list(co.options), list(co.rounds)):
                raise ConfigError(f"{path} was fitted with other settings: delete it to "
                                  "calibrate again, or use a new output folder")
            tables[key] = table.to_json()
        else:
            todo[key] = spec
    if not todo:
        return tables
    splits: dict[str, list[Task]] = {}
    for key, (policy, suite, tasks, _v, _t, draw_seed) in todo.items():
        examples = tuple(sweep.examples.get(suite.name, ()))
        exclude = {t.question for t in tasks} | {q for q, _ in examples}
        splits[key] = suite.draw_apart(policy.calibration, exclude=exclude,
                                       seed=draw_seed + 7_919)
    default, roles, limits = sweep.backends(
        extra_tasks=[t for split in splits.values() for t in split])
    client = ModelClient(default, roles=roles, ledger=ledger, pricing=sweep.pricing,
                         concurrency=limits)
    sem = asyncio.Semaphore(config.run.concurrency)
    try:
        for key, (policy, suite, _tasks, verifier, temp, _seed) in todo.items():
            examples = tuple(sweep.examples.get(suite.name, ()))
            apart = splits[key]
            solver = LLMSolver(max_output=config.run.max_output, examples=examples)
            m = max(policy.samples)

            graph = best_of_n(m, select="vote")
            queries = [(t, seed) for t in apart for seed in config.grid.seeds]
            drawn = await asyncio.gather(*(
                _pool(client, ledger, sem, graph, m, suite, t, seed, key=key, solver=solver,
                      temperature=temp,
                      logprobs=policy.probe if policy.probe_signal != "agreement" else 0)
                for t, seed in queries))
            kept = [(q, pl) for q, pl in zip(queries, drawn, strict=True) if pl is not None]
            pools = [pl for _, pl in kept]
            fit = functools.partial(
                CalibrationTable.fit, pools, probe=policy.probe, samples=policy.samples,
                verifier=verifier, prior=policy.prior, signal=policy.probe_signal,
                logprob_bins=policy.logprob_bins, kinds=policy.options)
            runs: dict[str, list[tuple[bool, int] | None]] = {}
            if policy.run_options() and pools:
                provisional = fit()
                for option in policy.run_options():
                    forced = compute_optimal(provisional, force=option,
                                             threshold=policy.threshold)
                    runs[option] = list(await asyncio.gather(*(
                        _ran(client, ledger, sem, forced, option, suite, t, seed, key=key,
                             solver=solver, temperature=temp, verifier=verifier,
                             skip=verifier and any(x.correct for x in pl[:policy.probe]))
                        for (t, seed), pl in kept)))
            table = fit(
                runs=runs,
                meta={"suite": suite.name, "tasks": [t.id for t in apart],
                      "questions": [t.question for t in apart], "samples": list(policy.samples),
                      "calibration": policy.calibration, "seeds": list(config.grid.seeds),
                      "temperature": temp, "logprob_bins": policy.logprob_bins,
                      "options": list(policy.options), "rounds": list(policy.rounds),
                      "runs": {o: [None if r is None else list(r) for r in rs]
                               for o, rs in runs.items()},
                      "pools": [[[s.answer, s.correct, s.tokens, s.logprob] for s in pl]
                                for pl in pools]})
            table.save(_file(out, key))
            _log.info("ablation.calibrated", key=key, queries=table.queries,
                      bins={b: round(table.share(b), 3) for b in table.cells})
            tables[key] = table.to_json()
    finally:
        await client.aclose()
    return tables


async def _ran(client: ModelClient, ledger: TokenLedger, sem: asyncio.Semaphore, graph: Any,
               option: str, suite: Suite, task: Task, seed: int, *, key: str,
               solver: LLMSolver, temperature: float | None, verifier: bool,
               skip: bool) -> tuple[bool, int] | None:
    """``(correct, tokens)`` of running ``option`` after the probe on one calibration query
    (every role's billed tokens, the probe's included); ``None`` when skipped (a verified
    probe stops whatever was chosen) or when the run failed."""
    if skip:
        return None
    run_id = hashlib.sha1(f"{key}|{option}|{task.id}|{seed}".encode()).hexdigest()[:16]
    ctx = RunContext(client=client, solver=solver, temperature=temperature, seed=seed,
                     verifier=suite.verifier(task) if verifier else None,
                     labels={"phase": "calibration", "policy": key, "suite": suite.name,
                             "task": task.id, "seed": str(seed), "option": option})
    async with sem:
        try:
            result = await arun(graph, task.question, context=ctx, run_id=run_id,
                                task_id=task.id)
        except RunError as exc:
            _log.warning("ablation.calibration_run_failed", task=task.id, seed=seed,
                         option=option, error=str(exc))
            return None
    tokens = sum(e.total_tokens for e in ledger.entries(run_id=run_id))
    return bool(suite.check(task, result.answer_text)), tokens


async def _pool(client: ModelClient, ledger: TokenLedger, sem: asyncio.Semaphore, graph: Any,
                m: int, suite: Suite, task: Task, seed: int, *, key: str, solver: LLMSolver,
                temperature: float | None, logprobs: int = 0) -> list[PoolSample] | None:
    """One calibration query's ``m`` samples (branch seeds ``seed + i``), in branch order;
    ``None`` when some failed (the pool would be shorter than every option assumes). The
    first ``logprobs`` samples ask for their token log-probabilities."""
    run_id = hashlib.sha1(f"{key}|{task.id}|{seed}".encode()).hexdigest()[:16]
    ctx = RunContext(client=client, solver=solver, temperature=temperature, seed=seed,
                     logprob_samples=logprobs,
                     labels={"phase": "calibration", "policy": key, "suite": suite.name,
                             "task": task.id, "seed": str(seed)})
    async with sem:
        result = await arun(graph, task.question, context=ctx, run_id=run_id,
                            task_id=task.id)
    tokens: dict[str, int] = {}
    for e in ledger.entries(run_id=run_id):
        tokens[e.branch or ""] = tokens.get(e.branch or "", 0) + e.total_tokens
    cands = sorted(result.state.get("candidates", []), key=lambda c: int(c.get("branch", "0")))
    if len(cands) < m:
        _log.warning("ablation.calibration_pool_short", task=task.id, seed=seed,
                     samples=len(cands))
        return None
    return [PoolSample(answer_key(c.get("answer", "")),
                       bool(suite.check(task, c.get("text", ""))),
                       tokens.get(str(c.get("branch")), 0), c.get("mean_logprob"))
            for c in cands]
