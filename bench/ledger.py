"""Ledger throughput and aggregation.

Measures, in one run:
  * appends/s to an in-memory TokenLedger;
  * durable appends/s to a LedgerStore file (one committed transaction per call, WAL,
    synchronous=NORMAL: survives kill -9), and with synchronous=FULL (survives power loss);
  * the same through a TokenLedger writing through to the store (what a run does);
  * a baseline: raw sqlite3 INSERT + COMMIT of the same tuple, same pragmas, same run;
  * the time to aggregate 1,000,000 rows by role.

Usage:
    python bench/ledger.py [--appends 20000] [--rows 1000000]

The last line states the headline figures and the ratio to the raw-SQLite baseline.
Target: >= 20,000 durable appends/s.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from stratagem.budgets import LedgerEntry, LedgerStore, TokenLedger

ROLES = ("planner", "decomposer", "solver", "judge")
# The row as the store writes it: every field in order, the time as ISO text, labels as JSON.
COLUMNS = tuple(LedgerEntry.model_fields)


def _params(e: LedgerEntry) -> tuple[Any, ...]:
    values = e.model_dump()
    values["started_at"] = e.started_at.isoformat()
    values["labels"] = json.dumps(e.labels, sort_keys=True)
    return tuple(values[c] for c in COLUMNS)


def _rows(n: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            run_id=f"run{i // 50}",
            role=ROLES[i % 4],
            node=ROLES[i % 4],
            model="gpt-4o-mini",
            prompt_tokens=100 + i % 7,
            completion_tokens=20 + i % 5,
            cached_tokens=None if i % 3 else 10,
            cost_usd=1e-5,
            labels={"topology": "best_of_n", "seed": str(i % 5)},
        )
        for i in range(n)
    ]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_memory(rows: list[LedgerEntry]) -> float:
    ledger = TokenLedger()
    t0 = time.perf_counter()
    for r in rows:
        ledger.append(r)
    return _rate(len(rows), time.perf_counter() - t0)


def bench_store(rows: list[LedgerEntry], path: Path, synchronous: str) -> float:
    with LedgerStore(path, synchronous=synchronous) as store:  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for r in rows:
            store.append(r)
        return _rate(len(rows), time.perf_counter() - t0)


def bench_write_through(rows: list[LedgerEntry], path: Path) -> float:
    with LedgerStore(path) as store:
        ledger = TokenLedger(store)
        t0 = time.perf_counter()
        for r in rows:
            ledger.append(r)
        return _rate(len(rows), time.perf_counter() - t0)


def bench_raw_sqlite(rows: list[LedgerEntry], path: Path) -> float:
    """Baseline: the same rows as tuples, INSERT + autocommit, WAL, synchronous=NORMAL."""
    params = [_params(r) for r in rows]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"CREATE TABLE t ({', '.join(COLUMNS)}, PRIMARY KEY (call_id))")
    sql = f"INSERT OR IGNORE INTO t VALUES ({', '.join('?' * len(COLUMNS))})"
    t0 = time.perf_counter()
    for p in params:
        conn.execute(sql, p)
    rate = _rate(len(params), time.perf_counter() - t0)
    conn.close()
    return rate


def bench_aggregate(n: int) -> tuple[float, int]:
    template = _rows(1000)
    ledger = TokenLedger()
    # Build rows cheaply (model_copy keeps validation out of the measured part).
    for i in range(n):
        ledger.append(template[i % 1000].model_copy(update={"call_id": f"c{i}"}))
    t0 = time.perf_counter()
    groups = ledger.group_by("role")
    seconds = time.perf_counter() - t0
    assert sum(g.calls for g in groups.values()) == n
    return seconds, len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    rows = _rows(args.appends)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        mem = bench_memory(rows)
        raw = bench_raw_sqlite(rows, d / "raw.sqlite")
        durable = bench_store(rows, d / "normal.sqlite", "normal")
        through = bench_write_through(_rows(args.appends), d / "through.sqlite")
        full_rows = rows[: max(1, args.appends // 10)]
        full = bench_store(full_rows, d / "full.sqlite", "full")
    agg_s, groups = bench_aggregate(args.rows)

    print(f"in-memory TokenLedger appends/s            {mem:12,.0f}")
    print(f"raw sqlite3 insert+commit/s (baseline)     {raw:12,.0f}")
    print(f"LedgerStore durable appends/s (NORMAL)     {durable:12,.0f}")
    print(f"TokenLedger + LedgerStore appends/s        {through:12,.0f}")
    print(f"LedgerStore durable appends/s (FULL fsync) {full:12,.0f}")
    print(f"aggregate {args.rows:,} rows by role ({groups} groups)  {agg_s:9.3f} s")
    verdict = "meets" if durable >= 20_000 else "MISSES"
    print(
        f"SUMMARY ledger: {durable:,.0f} durable appends/s ({verdict} target 20,000; "
        f"{durable / raw:.2f}x raw sqlite), {args.rows:,} rows aggregated by role in "
        f"{agg_s:.2f} s"
    )


if __name__ == "__main__":
    main()
