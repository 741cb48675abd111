"""Executors: where an ablation's runs execute. Executors run; only the driver writes.

:func:`~stratagem.ablation.run_ablation` is the driver. It plans the grid, hands the runs that
are not done to an :class:`Executor` and stores what comes back (each run's ledger rows, then
its record) in the output folder. It is the one process that writes those SQLite files.

* :class:`LocalExecutor` (the default) runs everything in the driver's event loop through one
  model client, whose ledger writes through to ``ledger.sqlite`` call by call and whose runs
  checkpoint to ``checkpoints.sqlite``: an interrupted run resumes where it stopped.
* :class:`RayExecutor` runs batches of runs (at most ``batch_size``, never across cells) as
  Ray tasks. A task builds its own backends from the shipped :class:`Sweep` (configs, tasks,
  prices; never live clients), records calls in an in-memory ledger, checkpoints in memory and
  returns each run's record with its ledger rows. Nothing is written before a batch comes
  back, so a driver crash loses the batches in flight, which rerun from scratch, and never
  leaves half a run behind. Per-endpoint concurrency limits hold across the cluster: one
  :class:`EndpointLimiter` actor per remote endpoint leases a slot around every ``send``.

Another executor needs only a ``name`` and ``execute`` (see :class:`Executor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from langgraph.checkpoint.memory import InMemorySaver

from stratagem.agents import (
    BackendCapabilities,
    ChatBackend,
    ChatRequest,
    ChatResponse,
    EndpointConfig,
    build_backend,
)
from stratagem.budgets import TokenLedger
from stratagem.errors import ConfigError, RunError, StratagemError
from stratagem.graphs import RedactingSerializer, sqlite_checkpointer
from stratagem.logging import configure_logging

if TYPE_CHECKING:
    from stratagem.ablation._config import EndpointConfig
    from stratagem.ablation._runner import PlannedRun, RunOutcome, Sweep

__all__ = [
    "EXECUTORS",
    "RAY_INSTALL_HINT",
    "EndpointLimiter",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "WorkerSecrets",
    "cell_batches",
    "check_ray_address",
    "executor_for",
    "run_in_memory",
    "shared_endpoint_limits",
]

EXECUTORS = ("local", "ray")
"""The executors ``stratagem ablate --executor`` accepts."""

RAY_INSTALL_HINT = "pip install 'stratagem[ray]'"
"""How to get Ray (an optional extra)."""

# Backends with nothing shared between processes to protect: the simulated backend is a pure
# function in each process, and `local` starts one embedded server per process (see
# stratagem.agents.ensure_local_server), whose limit ModelClient already applies per process.
_PER_PROCESS = frozenset({"simulated", "local"})

# Calls an EndpointLimiter actor may hold at once: the waiting `acquire`s count, so this must
# exceed the requests a cluster can have queued for one endpoint.
_ACTOR_CONCURRENCY = 10_000


@runtime_checkable
class Executor(Protocol):
    """Where the runs of an ablation execute.

    :meth:`execute` runs ``todo`` and yields one :class:`RunOutcome` per run as it finishes,
    in any order. It never writes the output folder: the driver stores every outcome. An
    executor whose runs record their calls in ``ledger`` as they happen (in the driver's
    process) yields outcomes without rows; one whose runs happen elsewhere ships them back.
    """

    @property
    def name(self) -> str:
        """A short name, for logs and :class:`AblationOutcome` (``local``, ``ray``)."""
        ...

    def execute(
        self,
        sweep: Sweep,
        todo: Sequence[PlannedRun],
        *,
        ledger: TokenLedger,
        checkpoints: Path | None,
    ) -> AsyncGenerator[RunOutcome, None]:
        """Run ``todo``; yield each run's outcome as it finishes.

        Args:
            sweep: What to run and with what (picklable).
            todo: The runs that are not done yet.
            ledger: The driver's durable ledger (an in-process executor records into it).
            checkpoints: The driver's checkpoint file for durable runs, or ``None``.
        """
        ...


class LocalExecutor:
    """Every run in the driver's event loop, ``run.concurrency`` at a time (the default).

    Calls go to the driver's durable ledger as they happen and durable runs checkpoint to the
    driver's checkpoint file, so an interrupted run resumes from its last step.
    """

    @property
    def name(self) -> str:
        """``local``."""
        return "local"

    async def execute(
        self,
        sweep: Sweep,
        todo: Sequence[PlannedRun],
        *,
        ledger: TokenLedger,
        checkpoints: Path | None,
    ) -> AsyncGenerator[RunOutcome, None]:
        """Run ``todo`` here (see :meth:`Executor.execute`)."""
        async with contextlib.AsyncExitStack() as stack:
            saver = None
            if checkpoints is not None:
                saver = await stack.enter_async_context(sqlite_checkpointer(checkpoints))
            async with aclosing(sweep.execute(todo, ledger=ledger, checkpointer=saver)) as runs:
                async for outcome in runs:
                    yield outcome


class RayExecutor:
    """Batches of runs as Ray tasks, on a local Ray instance or a cluster.

    Each task (one CPU) runs its batch ``run.concurrency`` at a time with its own backends,
    an in-memory ledger and in-memory checkpoints, and returns the records and ledger rows to
    the driver, which writes them. The results equal the local executor's for the same config
    (wall times aside). API keys named by the endpoint configs are read on the driver and sent
    with each task (not in the runtime_env, which the Ray dashboard shows).

    Args:
        address: The cluster to join: ``HEAD:6379`` from a machine that is a node of it,
            ``ray://HEAD:10001`` (Ray Client) from one that is not, or ``auto`` (the cluster
            this machine joined with ``ray start``). ``None``: Ray as already initialised in
            this process, else the cluster in ``RAY_ADDRESS`` (set under ``ray job submit``),
            else a new local instance that stops when the sweep ends.
        num_cpus: CPUs of the local instance this executor starts (not with ``address``).
        batch_size: The most runs in one Ray task; a batch never mixes cells. Bigger batches
            spread Ray's per-task overhead thinner; smaller ones balance better and lose less
            to a driver crash.
        log_level: stratagem's log level on the workers (their stderr reaches the driver).

    Raises:
        ConfigError: If Ray is not installed, or for conflicting arguments.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        batch_size: int = 32,
        log_level: str = "warning",
    ) -> None:
        self._ray = _import_ray()
        if address is not None and num_cpus is not None:
            raise ConfigError("num_cpus sizes a local Ray instance; a cluster at --address has "
                              "its own CPUs: drop one of the two")
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"num_cpus must be at least 1, got {num_cpus}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.address = address
        self.num_cpus = num_cpus
        self.batch_size = batch_size
        self.log_level = log_level

    @property
    def name(self) -> str:
        """``ray``."""
        return "ray"

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, batch_size={self.batch_size})"

    async def execute(
        self,
        sweep: Sweep,
        todo: Sequence[PlannedRun],
        *,
        ledger: TokenLedger,
        checkpoints: Path | None,
    ) -> AsyncGenerator[RunOutcome, None]:
        """Run ``todo`` on Ray (see :meth:`Executor.execute`).

        ``ledger`` and ``checkpoints`` are not used: workers record in memory and the driver
        writes what they return.

        Raises:
            ConfigError: If the cluster cannot be reached, or for a config error raised on a
                worker (e.g. a bad topology parameter).
            RunError: If a batch failed on the cluster; finished runs are kept.
        """
        del ledger, checkpoints
        if not todo:
            return
        ray = self._ray
        wanted = shared_endpoint_limits(sweep)  # before starting Ray: a config error fails fast
        secrets = WorkerSecrets.of(sweep)
        started = self._connect()
        pending: dict[asyncio.Future[Any], Any] = {}
        try:
            limits = self._limiters(wanted)
            task = ray.remote(_run_batch).options(num_cpus=1)
            shipped = ray.put(sweep)  # once, not with every task
            for batch in cell_batches(todo, self.batch_size):
                ref = task.remote(shipped, batch, limits, secrets, self.log_level)
                pending[asyncio.wrap_future(ref.future())] = ref
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    del pending[future]
                    for outcome in self._outcomes(future):
                        yield outcome
        finally:
            for future, ref in pending.items():
                future.cancel()
                with contextlib.suppress(Exception):  # already finished or gone
                    ray.cancel(ref)
            if started:
                ray.shutdown()

    def _connect(self) -> bool:
        ray = self._ray
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if self.address is not None:
            check_ray_address(self.address)
            options["address"] = self.address
        elif not os.environ.get("RAY_ADDRESS"):  # set by `ray job submit`: Ray joins it
            # "local": a new instance even if a cluster was started (or died) on this machine;
            # Ray's own default would join it, or wait minutes for one that is gone.
            options.update(address="local", num_cpus=self.num_cpus, include_dashboard=False)
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"at {self.address}" if self.address else "on this machine"
            raise ConfigError(
                f"cannot start or join a Ray cluster {where}: {exc}. Start one with "
                "`ray start --head` and pass --address HEAD:6379, or omit --address"
            ) from exc
        return True

    def _limiters(self, limits: Mapping[str, tuple[int, float]]) -> dict[str, _Limit]:
        if not limits:
            return {}
        actor = self._ray.remote(num_cpus=0, max_concurrency=_ACTOR_CONCURRENCY)(EndpointLimiter)
        return {key: _Limit(actor.options(name=f"stratagem-limiter:{size}:{key}",
                                          get_if_exists=True).remote(size), lease_s)
                for key, (size, lease_s) in limits.items()}

    def _outcomes(self, future: asyncio.Future[Any]) -> list[RunOutcome]:
        exceptions = self._ray.exceptions
        try:
            outcomes: list[RunOutcome] = future.result()
        except exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, StratagemError):
                raise cause from None
            raise RunError(f"a batch of runs failed on a Ray worker: {exc}") from exc
        except exceptions.RayError as exc:
            raise RunError(
                f"a batch of runs was lost on the Ray cluster ({type(exc).__name__}: {exc}); "
                "finished runs are kept: rerun the same command to finish"
            ) from exc
        return outcomes


def executor_for(
    name: str, *, address: str | None = None, log_level: str = "warning"
) -> Executor:
    """The executor ``stratagem ablate --executor NAME [--address ADDRESS]`` stands for.

    Raises:
        ConfigError: For an unknown name, an address without Ray, or Ray not installed.
    """
    if name == "local":
        if address is not None:
            raise ConfigError("--address is a Ray cluster's address: add --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, log_level=log_level)
    raise ConfigError(f"unknown executor {name!r}: use --executor local or --executor ray")


class EndpointLimiter:
    """At most ``limit`` calls in flight to one endpoint, across every process that asks.

    :class:`RayExecutor` runs one as a Ray actor per remote endpoint (zero CPUs); workers hold
    a lease from it around every ``send``. A lease expires after its ``lease_s``, so slots held
    by a worker that died come back.

    Args:
        limit: Leases out at once.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._leases: dict[str, float] = {}  # lease id -> expiry (monotonic clock)
        self._changed: asyncio.Condition | None = None
        self._peak = 0
        self._granted = 0

    def _condition(self) -> asyncio.Condition:
        # Made on first use, inside the event loop that serves the actor's calls.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self, lease_s: float) -> str:
        """Wait for a free slot; returns the lease id to :meth:`release`."""
        changed = self._condition()
        async with changed:
            while True:
                now = time.monotonic()
                for lease, expiry in list(self._leases.items()):
                    if expiry <= now:
                        del self._leases[lease]
                if len(self._leases) < self.limit:
                    break
                soonest = min(self._leases.values()) - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=soonest)
            lease = uuid.uuid4().hex
            self._leases[lease] = now + lease_s
            self._peak = max(self._peak, len(self._leases))
            self._granted += 1
            return lease

    async def release(self, lease: str) -> None:
        """Give a slot back (an unknown or expired lease is ignored)."""
        changed = self._condition()
        async with changed:
            if self._leases.pop(lease, None) is not None:
                changed.notify()

    async def stats(self) -> dict[str, int]:
        """``limit``, ``in_use``, ``peak`` (most leases out at once) and ``granted``."""
        return {"limit": self.limit, "in_use": len(self._leases), "peak": self._peak,
                "granted": self._granted}


@dataclass(frozen=True)
class _Limit:
    handle: Any  # a Ray actor handle of an EndpointLimiter
    lease_s: float


class _LimitedBackend:
    """A backend whose every ``send`` holds a lease from its endpoint's limiter, so the limit
    spans processes. ModelClient stays the one place that makes calls."""

    def __init__(self, inner: ChatBackend, limit: _Limit) -> None:
        self._inner = inner
        self._limit = limit

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    @property
    def capabilities(self) -> BackendCapabilities:
        return self._inner.capabilities

    async def send(self, request: ChatRequest) -> ChatResponse:
        limiter = self._limit.handle
        granted = limiter.acquire.remote(self._limit.lease_s)
        try:
            lease = await granted
        except asyncio.CancelledError:
            # Ray resolves the reference before calling: the lease goes back once granted.
            limiter.release.remote(granted)
            raise
        try:
            return await self._inner.send(request)
        finally:
            limiter.release.remote(lease)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class WorkerSecrets:
    """Environment variables (API keys) the driver has and the workers may not.

    Read on the driver with :meth:`of`, shipped with each task (never in a Ray runtime_env,
    which the dashboard shows), and set around a worker's runs with :meth:`exported`. The
    repr never shows the values.
    """

    values: Mapping[str, str] = field(repr=False)
    """Variable name -> value."""

    @classmethod
    def of(cls, sweep: Sweep) -> WorkerSecrets:
        """The API-key variables the sweep's remote endpoints name (and
        ``STRATAGEM_API_KEY``), with the driver's values; none for simulated or local ones."""
        remote = [e for e in sweep.endpoints().values() if e.backend not in _PER_PROCESS]
        names = {e.api_key_env for e in remote} | ({"STRATAGEM_API_KEY"} if remote else set())
        return cls({n: os.environ[n] for n in sorted(names) if os.environ.get(n)})

    @contextlib.contextmanager
    def exported(self) -> Iterator[None]:
        """Set the variables in this process for the block, then restore what was there."""
        saved = {n: os.environ.get(n) for n in self.values}
        os.environ.update(self.values)
        try:
            yield
        finally:
            for n, value in saved.items():
                if value is None:
                    os.environ.pop(n, None)
                else:
                    os.environ[n] = value


def shared_endpoint_limits(sweep: Sweep) -> dict[str, tuple[int, float]]:
    """Endpoint key -> (limit, lease seconds) of every endpoint shared between processes,
    with the limit each process's ModelClient would apply (the last explicit one wins).

    Simulated and local endpoints are per process, so they never appear. An executor that
    spreads a sweep over processes holds each endpoint to its limit across all of them."""
    found: dict[str, tuple[ChatBackend, EndpointConfig, int | None]] = {}
    for endpoint in sweep.endpoints().values():
        if endpoint.backend in _PER_PROCESS:
            continue
        # A remote backend is only a description until it sends: cheap to build here, and
        # its endpoint key and default limit are exactly what the workers' clients use.
        backend = build_backend(endpoint)
        before = found.get(backend.endpoint)
        explicit = endpoint.max_concurrency or (before[2] if before else None)
        found[backend.endpoint] = (backend, endpoint, explicit)
    # A lease outlives any one attempt (bounded by the read timeout) with room to spare; it
    # only expires if the worker holding it died.
    return {key: (explicit or backend.capabilities.default_concurrency,
                  2 * endpoint.timeout_s + 60)
            for key, (backend, endpoint, explicit) in found.items()}


def cell_batches(todo: Sequence[PlannedRun], size: int) -> list[list[PlannedRun]]:
    """``todo`` in batches of at most ``size`` runs, none mixing two cells of the grid (so
    a batch shares its backends and a crash loses parts of few cells)."""
    cells: dict[str, list[PlannedRun]] = {}
    for plan in todo:
        cells.setdefault(plan.cell, []).append(plan)
    return [runs[i:i + size] for runs in cells.values() for i in range(0, len(runs), size)]


def _limited(limits: Mapping[str, _Limit], backend: ChatBackend,
             endpoint: EndpointConfig) -> ChatBackend:
    limit = limits.get(backend.endpoint)
    return backend if limit is None else _LimitedBackend(backend, limit)


def _run_batch(sweep: Sweep, plans: list[PlannedRun], limits: Mapping[str, _Limit],
               secrets: WorkerSecrets, log_level: str) -> list[RunOutcome]:
    """One Ray task: a batch of runs, with an in-memory ledger and in-memory checkpoints."""
    configure_logging(level=log_level)
    with secrets.exported():
        return asyncio.run(_collect(sweep, plans, limits))


async def run_in_memory(sweep: Sweep, plans: list[PlannedRun]) -> list[RunOutcome]:
    """What a remote worker does with its batch, in this process: run ``plans`` with an
    in-memory ledger (and in-memory checkpoints if the sweep is durable), every outcome
    carrying its ledger rows and transfers for the driver to write."""
    return await _collect(sweep, plans, {})


async def _collect(sweep: Sweep, plans: list[PlannedRun],
                   limits: Mapping[str, _Limit]) -> list[RunOutcome]:
    saver = InMemorySaver(serde=RedactingSerializer()) if sweep.config.run.durable else None
    wrap = functools.partial(_limited, limits) if limits else None
    async with aclosing(sweep.execute(plans, ledger=TokenLedger(), checkpointer=saver,
                                      wrap=wrap, ship_rows=True)) as runs:
        return [outcome async for outcome in runs]


def check_ray_address(address: str) -> None:
    """Fail fast on a wrong cluster address: Ray itself retries for about a minute.

    Raises:
        ConfigError: If nothing answers at ``HOST:PORT`` (or ``ray://HOST:PORT``); other
            forms (``auto``) are left to Ray.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or another form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({exc}): start the head node with "
            "`ray start --head` and pass its address, e.g. --address HEAD:6379"
        ) from exc


def _import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415  (optional extra: imported only when asked for)
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: "
                          f"{RAY_INSTALL_HINT}") from exc
    return ray
