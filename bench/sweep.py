"""Sweep throughput: simulated-backend runs per second, local executor vs Ray, on this machine.

Runs one simulated grid (a few hundred runs, no model server) three times, each into a fresh
output folder:
  * with the local executor (one event loop in this process);
  * on a local Ray instance, cold: the first sweep pays for starting and importing the
    workers (``ray.init`` itself is timed apart);
  * on the same instance, warm: workers already up, as for every sweep after the first and
    for the bulk of a long one.
It checks that the three give identical records (wall times aside), then prints runs/s.

Usage:
    python bench/sweep.py [--tasks 20] [--cpus 2] [--batch-size 32]

Needs the ``ray`` extra. The last line states runs/s and the warm ray/local ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from stratagem.ablation import (
    Executor,
    LocalExecutor,
    RayExecutor,
    ResultsStore,
    parse_config,
    run_ablation,
)
from stratagem.logging import configure_logging

TOPOLOGIES: list[Any] = [
    "single",
    "plan_solve",
    "decompose_solve",
    {"name": "best_of_n", "n": 4, "select": "judge"},
    {"name": "refine", "max_rounds": 3},
    "adaptive",
]


def _config(out: Path, tasks: int) -> Any:
    return parse_config({
        "name": "bench-sweep",
        "output": str(out),
        "endpoint": {"backend": "simulated"},
        "grid": {"topologies": TOPOLOGIES, "budgets": [800, 1600], "seeds": [0, 1]},
        "suites": [{"name": "arith", "n": tasks, "depth": [2, 8]}],
        "run": {"concurrency": 64, "durable": False, "reallocation": "judge_feedback"},
    })


def _sweep(out: Path, tasks: int, executor: Executor) -> tuple[int, float]:
    t0 = time.perf_counter()
    outcome = asyncio.run(run_ablation(_config(out, tasks), executor=executor))
    seconds = time.perf_counter() - t0
    if outcome.interrupted or outcome.ran != outcome.planned:
        raise SystemExit(f"sweep incomplete: {outcome}")
    return outcome.ran, seconds


def _records(out: Path) -> dict[str, dict[str, Any]]:
    with ResultsStore(out / "results.sqlite") as rs:
        return {r.run_id: r.model_dump(exclude={"wall_s", "finished_at"}) for r in rs.records()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20, help="arith tasks (x24 runs)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                        help="CPUs of the local Ray instance")
    parser.add_argument("--batch-size", type=int, default=32, help="runs per Ray task")
    args = parser.parse_args()
    configure_logging(level="error")
    # A benchmark on one machine: keep Ray on loopback, skip its auth-token file and its
    # usage statistics.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray  # noqa: PLC0415  (after the environment it reads at import)

    with tempfile.TemporaryDirectory(prefix="stratagem-bench-") as tmp:
        root = Path(tmp)
        n, local_s = _sweep(root / "local", args.tasks, LocalExecutor())
        print(f"local : {n} runs in {local_s:6.2f} s = {n / local_s:7.1f} runs/s")

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False,
                 logging_level="error")
        init_s = time.perf_counter() - t0
        print(f"ray.init ({args.cpus} CPUs): {init_s:.2f} s (not counted below)")
        try:
            executor = RayExecutor(batch_size=args.batch_size, log_level="error")
            _, cold_s = _sweep(root / "ray-cold", args.tasks, executor)
            print(f"ray   : {n} runs in {cold_s:6.2f} s = {n / cold_s:7.1f} runs/s  "
                  "(cold: includes starting the workers)")
            _, warm_s = _sweep(root / "ray-warm", args.tasks, executor)
            print(f"ray   : {n} runs in {warm_s:6.2f} s = {n / warm_s:7.1f} runs/s  (warm)")
        finally:
            ray.shutdown()

        same = _records(root / "local") == _records(root / "ray-cold") \
            == _records(root / "ray-warm")
        print(f"identical records (wall times aside): {'yes' if same else 'NO'}")
        if not same:
            raise SystemExit("local and Ray results differ")

    print(f"SUMMARY sweep: {n} simulated runs, local {n / local_s:.1f} runs/s, "
          f"ray on {args.cpus} CPUs {n / warm_s:.1f} runs/s warm "
          f"({n / cold_s:.1f} cold, {local_s / cold_s:.2f}x); "
          f"ray/local = {local_s / warm_s:.2f}x")


if __name__ == "__main__":
    main()
