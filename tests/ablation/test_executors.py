"""Executors: the local one and Ray give the same results; only the driver writes; a driver
crash repeats no finished run; per-endpoint limits hold across Ray workers.

Tests marked ``slow`` share one local Ray instance (2 CPUs, loopback only, no dashboard),
started on first use and shut down after the module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import tomllib
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import structlog

from stratagem.ablation import (
    AblationConfig,
    EndpointConfig,
    EndpointLimiter,
    Executor,
    LocalExecutor,
    PlannedRun,
    RayExecutor,
    ResultsStore,
    RunOutcome,
    Sweep,
    WorkerSecrets,
    cell_batches,
    check_ray_address,
    executor_for,
    parse_config,
    run_ablation,
    run_in_memory,
    shared_endpoint_limits,
)
from stratagem.budgets import LedgerStore, TokenLedger
from stratagem.errors import ConfigError
from stratagem.testing import FakeOpenAIServer

# A local Ray instance binds the machine's routable address unless Ray clusters are disabled,
# and Ray reads this when it is imported: set it before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

TIMING = {"wall_s", "finished_at"}


def _toml(out: Path, **run: Any) -> str:
    """48 simulated runs: 3 topologies (one fans out, one plans and moves budget between
    roles) x 2 budgets x 2 seeds x 4 tasks."""
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in run.items())
    return f"""\
name = "exec"
output = {json.dumps(str(out))}
[endpoint]
backend = "simulated"
[grid]
topologies = ["single", {{ name = "best_of_n", n = 3, select = "judge" }}, "adaptive"]
budgets = [800, 1600]
seeds = [0, 1]
[[suites]]
name = "arith"
n = 4
depth = [2, 6]
[run]
concurrency = 8
reallocation = "judge_feedback"
{extra}"""


def _config(out: Path, **run: Any) -> AblationConfig:
    return parse_config(tomllib.loads(_toml(out, **run)))


def _records(out: Path) -> dict[str, dict[str, Any]]:
    with ResultsStore(out / "results.sqlite") as rs:
        return {r.run_id: r.model_dump(exclude=TIMING) for r in rs.records()}


def _ledger_by_run(out: Path) -> dict[str, int]:
    with LedgerStore(out / "ledger.sqlite") as store:
        return {run: int(t.total_tokens) for run, t in store.group_by("run_id").items()}


@pytest.fixture(scope="module")
def local_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the config on the local executor, to compare others with."""
    out = tmp_path_factory.mktemp("local") / "out"
    outcome = asyncio.run(run_ablation(_config(out)))
    assert outcome.ran == outcome.planned == 48
    records = _records(out).values()
    assert any(r["transfers"] for r in records), "the grid should move budget somewhere"
    assert len({r["correct"] for r in records}) == 2
    return out


class _DriverCrash(Exception):
    """Stands for the driver dying after some runs came back."""


class _CrashAfter:
    """An executor that lets ``n`` outcomes reach the driver, then crashes it."""

    def __init__(self, inner: Executor, n: int) -> None:
        self.inner, self.n = inner, n

    @property
    def name(self) -> str:
        return self.inner.name

    async def execute(self, sweep: Sweep, todo: Sequence[PlannedRun], *, ledger: TokenLedger,
                      checkpoints: Path | None) -> AsyncGenerator[RunOutcome, None]:
        seen = 0
        async with aclosing(self.inner.execute(sweep, todo, ledger=ledger,
                                               checkpoints=checkpoints)) as outcomes:
            async for outcome in outcomes:
                if seen == self.n:
                    raise _DriverCrash
                seen += 1
                yield outcome


# -- without Ray ---------------------------------------------------------------------------


def test_executor_names() -> None:
    assert isinstance(executor_for("local"), LocalExecutor)
    assert isinstance(LocalExecutor(), Executor)
    with pytest.raises(ConfigError, match="--executor local or --executor ray"):
        executor_for("dask")
    with pytest.raises(ConfigError, match="--executor ray"):
        executor_for("local", address="10.0.0.1:6379")


def test_ray_executor_arguments() -> None:
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="num_cpus"):
        RayExecutor("127.0.0.1:6379", num_cpus=2)
    with pytest.raises(ConfigError, match="batch_size"):
        RayExecutor(batch_size=0)
    assert executor_for("ray", address="auto").name == "ray"


def test_ray_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'stratagem\[ray\]'"):
        executor_for("ray")


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """The CLI configures logging for the whole process: undo it for the tests after."""
    yield
    structlog.reset_defaults()
    for name in ("openai", "httpx", "httpx2", "langgraph"):
        lib = logging.getLogger(name)
        lib.handlers = []
        lib.propagate = True
        lib.setLevel(logging.NOTSET)


def test_cli_without_ray_is_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         cli_logging: None) -> None:
    from stratagem.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[grid]\ntopologies = ["single"]\nbudgets = [500]\n[[suites]]\nname = "arith"\n',
                   encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", str(cfg), "--executor", "ray"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "pip install 'stratagem[ray]'" in err
    assert "Traceback" not in err


def test_a_wrong_cluster_address_fails_fast() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match="ray start --head"):
            check_ray_address(address)
    check_ray_address("auto")  # left to Ray


def test_batches_stay_within_a_cell(tmp_path: Path) -> None:
    plans = Sweep.from_config(_config(tmp_path)).plan()
    batches = cell_batches(plans, 5)
    assert sorted(p.run_id for b in batches for p in b) == sorted(p.run_id for p in plans)
    assert all(len(b) <= 5 and len({p.cell for p in b}) == 1 for b in batches)


def test_worker_path_matches_local(tmp_path: Path, local_baseline: Path) -> None:
    """What a Ray task does (in-memory ledger and checkpoints, rows shipped back), in-process."""
    sweep = Sweep.from_config(_config(tmp_path))
    outcomes = asyncio.run(run_in_memory(sweep, sweep.plan()))
    expected = _records(local_baseline)
    assert {o.record.run_id: o.record.model_dump(exclude=TIMING) for o in outcomes} == expected
    per_run = _ledger_by_run(local_baseline)
    for o in outcomes:
        assert {e.run_id for e in o.entries} <= {o.record.run_id}
        assert sum(e.total_tokens for e in o.entries) == o.record.tokens_total
        assert o.record.tokens_total == per_run.get(o.record.run_id, 0)
        assert len(o.transfers) == o.record.transfers


def test_local_crash_resumes_without_repeating(tmp_path: Path, local_baseline: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(_DriverCrash):
        asyncio.run(run_ablation(_config(out), executor=_CrashAfter(LocalExecutor(), 10)))
    assert len(_records(out)) == 10
    outcome = asyncio.run(run_ablation(_config(out)))
    assert (outcome.skipped, outcome.ran) == (10, 38)
    assert _records(out) == _records(local_baseline)


def test_secrets_travel_with_the_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MY_KEY", "sk-driver-secret")
    monkeypatch.delenv("STRATAGEM_API_KEY", raising=False)
    judge = EndpointConfig(backend="vllm", model="m", base_url="http://127.0.0.1:9",
                           api_key_env="MY_KEY")
    cfg = _config(tmp_path).model_copy(update={"roles": {"judge": judge}})
    secrets = WorkerSecrets.of(Sweep.from_config(cfg))
    assert "sk-driver-secret" not in repr(secrets)
    monkeypatch.delenv("MY_KEY")
    with secrets.exported():
        assert os.environ["MY_KEY"] == "sk-driver-secret"
    assert "MY_KEY" not in os.environ
    assert WorkerSecrets.of(Sweep.from_config(_config(tmp_path))).values == {}  # simulated: none


def test_only_shared_endpoints_get_a_cluster_limit(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    url = "http://127.0.0.1:9/v1"
    roles = {
        "judge": EndpointConfig(backend="vllm", model="m", base_url=url, max_concurrency=3),
        "planner": EndpointConfig(backend="vllm", model="m", base_url=url),
        "decomposer": EndpointConfig(backend="openai", model="gpt-4o-mini"),
    }
    cfg = _config(tmp_path).model_copy(update={"roles": roles})
    limits = shared_endpoint_limits(Sweep.from_config(cfg))
    # simulated: nothing shared; one limit per URL, the explicit one; else the kind's default
    assert {k: size for k, (size, _) in limits.items()} == {
        "http://127.0.0.1:9/v1": 3, "https://api.openai.com/v1": 16}
    assert limits[url][1] > 120  # a lease outlives the read timeout


def test_endpoint_limiter_leases() -> None:
    async def scenario() -> dict[str, int]:
        limiter = EndpointLimiter(2)
        inside = 0
        most = 0

        async def call() -> None:
            nonlocal inside, most
            lease = await limiter.acquire(60)
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            await limiter.release(lease)

        await asyncio.gather(*(call() for _ in range(6)))
        assert most == 2
        await limiter.acquire(0.05)  # held by a worker that died: never released
        await limiter.acquire(0.05)
        await asyncio.wait_for(limiter.acquire(60), timeout=2)  # the expired leases came back
        return await limiter.stats()

    stats = asyncio.run(scenario())
    assert stats == {"limit": 2, "in_use": 1, "peak": 2, "granted": 9}


# -- on a local Ray instance ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_env() -> Iterator[None]:
    """Environment of a loopback-only test instance: no token file written to ~/.ray, no
    usage statistics sent."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        yield


@pytest.fixture(scope="module")
def ray_session(ray_env: None) -> Iterator[Any]:
    """One local Ray instance for the module, shut down at the end."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    # address="local": a fresh instance, even if a cluster was started on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127."), f"Ray is not on loopback: {address}"
        yield ray
    finally:
        ray.shutdown()


def _overlap(server: FakeOpenAIServer) -> int:
    """The most requests the server was handling at once."""
    events = sorted([(r.started_at, 1) for r in server.log]
                    + [(r.finished_at or r.started_at, -1) for r in server.log],
                    key=lambda e: (e[0], e[1]))
    most = inside = 0
    for _, step in events:
        inside += step
        most = max(most, inside)
    return most


@pytest.mark.slow
def test_cli_runs_on_ray(ray_env: None, tmp_path: Path, local_baseline: Path,
                        cli_logging: None) -> None:
    """``--executor ray`` end to end; an executor shuts down only a Ray instance it started."""
    ray = pytest.importorskip("ray")
    from stratagem.cli import main

    cfg = tmp_path / "c.toml"
    out = tmp_path / "out"
    cfg.write_text(_toml(out), encoding="utf-8")
    was_running = ray.is_initialized()
    main(["--quiet", "ablate", str(cfg), "--executor", "ray", "--no-report"])
    assert ray.is_initialized() == was_running
    assert _records(out) == _records(local_baseline)


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False])
def test_ray_matches_local(ray_session: Any, tmp_path: Path, local_baseline: Path,
                           durable: bool) -> None:
    out = tmp_path / "out"
    outcome = asyncio.run(run_ablation(_config(out, durable=durable),
                                       executor=RayExecutor(batch_size=7)))
    assert (outcome.ran, outcome.executor) == (48, "ray")
    assert _records(out) == _records(local_baseline)
    assert _ledger_by_run(out) == _ledger_by_run(local_baseline)
    with LedgerStore(out / "ledger.sqlite") as ray_rows, \
            LedgerStore(local_baseline / "ledger.sqlite") as local_rows:
        assert len(ray_rows) == len(local_rows)
        assert len(ray_rows.transfers()) == len(local_rows.transfers())
    assert not (out / "checkpoints.sqlite").exists()  # workers checkpoint in memory


@pytest.mark.slow
def test_ray_driver_crash_repeats_no_finished_run(ray_session: Any, tmp_path: Path,
                                                  local_baseline: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(_DriverCrash):
        asyncio.run(run_ablation(_config(out),
                                 executor=_CrashAfter(RayExecutor(batch_size=4), 9)))
    assert len(_records(out)) == 9
    # Nothing partial: every run in the ledger is a finished run with exactly its rows.
    finished = {k: v["tokens_total"] for k, v in _records(out).items()}
    assert _ledger_by_run(out) == {k: v for k, v in finished.items() if v}
    outcome = asyncio.run(run_ablation(_config(out), executor=RayExecutor(batch_size=4)))
    assert (outcome.skipped, outcome.ran) == (9, 39)
    assert _records(out) == _records(local_baseline)
    assert _ledger_by_run(out) == _ledger_by_run(local_baseline)


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 2])
def test_endpoint_limit_holds_across_workers(ray_session: Any, tmp_path: Path,
                                             limit: int) -> None:
    with FakeOpenAIServer(lambda body: "Answer: 7", latency=0.3) as server:
        cfg = parse_config({
            "output": str(tmp_path / "out"),
            "endpoint": {"backend": "generic", "model": "fake-model",
                         "base_url": server.base_url, "max_concurrency": limit},
            "grid": {"topologies": ["single"], "budgets": [400], "seeds": [0, 1]},
            "suites": [{"name": "arith", "n": 2, "depth": 2}],
            "run": {"durable": False},
        })
        outcome = asyncio.run(run_ablation(cfg, executor=RayExecutor(batch_size=1)))
    assert outcome.ran == 4
    assert server.requests >= 4
    # Two workers run two batches at once; the limiter actor decides how many calls overlap.
    assert _overlap(server) == limit


@pytest.mark.slow
def test_a_config_error_on_a_worker_stays_a_config_error(ray_session: Any,
                                                         tmp_path: Path) -> None:
    cfg = _config(tmp_path / "out")
    bad = cfg.grid.model_copy(update={"topologies": [
        cfg.grid.topologies[0].model_validate({"name": "best_of_n", "bogus": 1})]})
    # Caught on the driver before any Ray task starts, and still the user's mistake.
    with pytest.raises(ConfigError, match=r"grid\.topologies\[0\].*bad parameter"):
        asyncio.run(run_ablation(cfg.model_copy(update={"grid": bad}),
                                 executor=RayExecutor()))
