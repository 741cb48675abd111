"""``stratagem view`` on a folder of 100,000 runs: how long the first page takes.

The folder is built quickly by writing records directly (no graphs run): ``--runs`` records
spread over 8 topologies x 4 budgets x 2 policies x 2 suites, right or wrong, each with two
ledger rows, written in one transaction per file through the stores' own formats. Then, in
one run of this program:

  * the viewer starts on it (opens the files read-only, builds its in-memory index);
  * the first page of the runs table is fetched over HTTP on loopback, as the browser does
    (50 runs in finishing order), then a filtered and sorted page, a page deep in the table,
    the live-mode poll, and one run's trace;
  * the baseline: what reading the folder without the index costs, ``ResultsStore.to_pandas()``
    (every record parsed) followed by the same filter, sort and slice in pandas.

Usage:
    python bench/viewer.py [--runs 100000] [--keep DIR]

The last line states the first page's time and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stratagem.ablation import ResultsStore, RunRecord
from stratagem.budgets import LedgerEntry, LedgerStore
from stratagem.view import serve

TOPOLOGIES = ["single", "plan_solve", "decompose_solve", "best_of_4+verifier",
              "best_of_8+verifier", "best_of_4+vote", "refine", "tree"]
BUDGETS = [800, 1600, 3200, 6400]
POLICIES = ["uniform", "difficulty_adaptive"]
SUITES = ["arith", "words"]


def build(folder: Path, runs: int) -> None:
    """Write ``runs`` records and two ledger rows per run into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows, entries = [], []
    for i in range(runs):
        topology = TOPOLOGIES[i % len(TOPOLOGIES)]
        budget = BUDGETS[(i // 8) % len(BUDGETS)]
        policy = POLICIES[(i // 32) % len(POLICIES)]
        suite = SUITES[(i // 64) % len(SUITES)]
        run_id = f"run{i:07d}"
        prompt, completion = 80 + i % 50, 40 + (i * 7) % 300
        record = RunRecord(
            run_id=run_id, cell=f"{topology}|{budget}|{policy}", suite=suite,
            task_id=f"{suite}/0/{i % 500}", topology=topology, budget=budget,
            allocated=budget, policy=policy, seed=i % 3, backend="simulated",
            model="simulated", simulated=True, correct=(i * 2654435761) % 7 < 4,
            answer=str(i % 97), stop_reason="done", roles_present="solver+judge",
            tokens_total=2 * (prompt + completion), prompt_tokens=2 * prompt,
            completion_tokens=2 * completion, tokens_solver=prompt + completion,
            tokens_judge=prompt + completion, accepted_tokens=prompt + completion,
            waste_tokens=prompt + completion, calls=2, cost_usd=0.0, wall_s=0.01 * (i % 90),
            finished_at=start + timedelta(seconds=i),
        )
        rows.append((run_id, record.cell, record.model_dump_json()))
        for k, role in enumerate(("solver", "judge")):
            entries.append(LedgerEntry(
                call_id=f"{run_id}-{k}", run_id=run_id, thread_id=run_id, role=role,
                node="solve" if k == 0 else "judge", model="simulated", backend="simulated",
                prompt_tokens=prompt, completion_tokens=completion, latency_s=0.001,
                started_at=start + timedelta(seconds=i, milliseconds=k),
                labels={"topology": topology, "suite": suite}))
    ResultsStore(folder / "results.sqlite").close()  # the file, with its kind and version
    with sqlite3.connect(folder / "results.sqlite") as conn:
        conn.executemany("INSERT INTO runs VALUES (?, ?, ?)", rows)
    with LedgerStore(folder / "ledger.sqlite") as store:
        store.append_many(entries)


def _get(url: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as r:
        body = json.loads(r.read())
    return time.perf_counter() - t0, body


def _run(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    loop.close()


async def _wait(ready: asyncio.Future[str]) -> str:
    return await asyncio.shield(ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="Build the folder here.")
    args = parser.parse_args()
    cores = os.cpu_count()
    load = os.getloadavg()
    print(f"machine: {cores} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "runs"
        t0 = time.perf_counter()
        build(folder, args.runs)
        print(f"built {args.runs:,} runs ({2 * args.runs:,} ledger rows) in "
              f"{time.perf_counter() - t0:.1f} s: {folder}")

        loop = asyncio.new_event_loop()
        ready: asyncio.Future[str] = loop.create_future()
        t0 = time.perf_counter()
        task = loop.create_task(serve(folder, port=0, ready=ready))
        server = threading.Thread(target=_run, args=(loop, task), daemon=True)
        server.start()
        url = asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(600)
        startup = time.perf_counter() - t0
        print(f"viewer up in {startup:.2f} s (read-only open + in-memory index): {url}")

        first, page = _get(url + "api/runs?limit=50")
        assert page["total"] == args.runs and len(page["rows"]) == 50
        print(f"first page (50 of {page['total']:,} runs): {first * 1000:.1f} ms")
        queries = {
            "filtered + sorted": "api/runs?topology=best_of_8%2Bverifier&budget=1600&correct=1"
                                 "&sort=tokens_total&desc=1&limit=50",
            "deep page": f"api/runs?offset={args.runs - 50}&limit=50&sort=wall_s",
            "live poll": "api/status",
            "one run's trace": f"api/run/run{args.runs // 2:07d}",
        }
        for name, path in queries.items():
            times = [_get(url + path)[0] for _ in range(5)]
            print(f"{name}: median {statistics.median(times) * 1000:.1f} ms of 5")

        t0 = time.perf_counter()
        with ResultsStore(folder / "results.sqlite") as store:
            df = store.to_pandas()
        sel = df[(df.topology == "best_of_8+verifier") & (df.budget == 1600) & df.correct]
        sel.sort_values("tokens_total", ascending=False).head(50)
        baseline = time.perf_counter() - t0
        print(f"baseline: ResultsStore.to_pandas() + filter/sort/slice: {baseline:.2f} s")
        loop.call_soon_threadsafe(task.cancel)
        server.join(30)
    print(f"SUMMARY viewer: first page of {args.runs:,} runs in {first * 1000:.0f} ms over "
          f"HTTP (viewer up in {startup:.1f} s); {baseline / first:.0f}x faster than loading "
          f"the records into pandas ({baseline:.1f} s); load average {load[0]:.2f} on "
          f"{cores} cores")


if __name__ == "__main__":
    main()
