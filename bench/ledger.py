"""Ledger throughput and aggregation.

Measures, in one run:
  * appends/s to an in-memory TokenLedger;
  * durable appends/s to a LedgerStore file (one committed transaction per call, WAL,
    synchronous=NORMAL: survives kill -9), and with synchronous=FULL (survives power loss);
  * the same through a TokenLedger writing through to the store (what a run does);
  * group commit: rows of 64 concurrent ``TokenLedger.acomplete`` calls per event-loop
    step (a fan-out's replies), each durable when its call returns;
  * the baseline: raw sqlite3 INSERT + COMMIT of the same tuples (made before the clock
    starts) into the same table (schema and index made by LedgerStore), same pragmas, same
    run; and into a table with a primary key only, for reference;
  * the time to aggregate 1,000,000 rows by role.

Usage:
    python bench/ledger.py [--appends 20000] [--rows 1000000]

The last line states the headline figures and the ratios to the raw-SQLite baseline.
Targets (issue 18): durable appends >= 0.9x the raw loop; 1M rows by role <= 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def bench_group_commit(rows: list[LedgerEntry], path: Path, width: int = 64) -> float:
    """Rows completed by ``width`` concurrent tasks at a time (their commits shared)."""
    async def fan_outs(ledger: TokenLedger) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(rows), width):
            await asyncio.gather(*(ledger.acomplete(r) for r in rows[i:i + width]))
        return _rate(len(rows), time.perf_counter() - t0)

    with LedgerStore(path) as store:
        ledger = TokenLedger(store)
        rate = asyncio.run(fan_outs(ledger))
        assert len(store.entries()) == len(rows)
        return rate


def bench_raw_sqlite(rows: list[LedgerEntry], path: Path, same_table: bool = True) -> float:
    """Baseline: the same rows as tuples, INSERT + autocommit, WAL, synchronous=NORMAL; into
    the store's own table (``same_table``) or one with a primary key only."""
    params = [_params(r) for r in rows]
    if same_table:
        LedgerStore(path).close()  # the schema, index and pragmas a LedgerStore makes
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    table = "ledger_calls" if same_table else "t"
    if not same_table:
        conn.execute(f"CREATE TABLE t ({', '.join(COLUMNS)}, PRIMARY KEY (call_id))")
    sql = (f"INSERT OR IGNORE INTO {table} ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(COLUMNS))})")
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

    load = os.getloadavg()[0]
    rows = _rows(args.appends)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        mem = bench_memory(rows)
        raw = bench_raw_sqlite(rows, d / "raw.sqlite")
        raw_pk = bench_raw_sqlite(rows, d / "raw-pk.sqlite", same_table=False)
        durable = bench_store(rows, d / "normal.sqlite", "normal")
        through = bench_write_through(_rows(args.appends), d / "through.sqlite")
        group = bench_group_commit(_rows(args.appends), d / "group.sqlite")
        full_rows = rows[: max(1, args.appends // 10)]
        full = bench_store(full_rows, d / "full.sqlite", "full")
    agg_s, groups = bench_aggregate(args.rows)

    print(f"machine load (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after, on "
          f"{os.cpu_count()} cores")
    print(f"in-memory TokenLedger appends/s              {mem:12,.0f}")
    print(f"raw sqlite3 insert+commit/s (same table)     {raw:12,.0f}")
    print(f"raw sqlite3 insert+commit/s (primary key)    {raw_pk:12,.0f}")
    print(f"LedgerStore durable appends/s (NORMAL)       {durable:12,.0f}")
    print(f"TokenLedger + LedgerStore appends/s          {through:12,.0f}")
    print(f"group commit, 64 concurrent acomplete/s      {group:12,.0f}")
    print(f"LedgerStore durable appends/s (FULL fsync)   {full:12,.0f}")
    print(f"aggregate {args.rows:,} rows by role ({groups} groups)    {agg_s:9.3f} s")
    ratio = durable / raw

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    print(
        f"SUMMARY ledger: {durable:,.0f} durable appends/s = {ratio:.2f}x the raw sqlite loop "
        f"into the same table ({verdict(ratio >= 0.9)} target >= 0.9x); group commit of a "
        f"64-way fan-out {group:,.0f} rows/s ({group / raw:.2f}x the raw loop); "
        f"{args.rows:,} rows aggregated by role in {agg_s:.2f} s ({verdict(agg_s <= 0.5)} "
        f"target <= 0.5 s)"
    )


if __name__ == "__main__":
    main()
