"""``compute_optimal`` in ``[grid] policies`` on the simulated backend: a calibration split
drawn apart from the evaluated tasks, fitted once and saved next to the results, reused; a
choice per query recorded in the ledger with its reason; and the planted difficulty found."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from stratagem.ablation import ResultsStore, RunRecord, parse_config, run_ablation
from stratagem.budgets import CalibrationTable, LedgerStore

BO8 = {"name": "best_of_n", "n": 8, "select": "verifier", "label": "bo8"}


def _config(out: Path, **policy: Any) -> Any:
    return parse_config({
        "name": "co", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": [BO8], "budgets": [1600], "seeds": [0, 1],
                 "policies": ["uniform", {"name": "compute_optimal", "label": "co",
                                          "calibration": 24, "samples": [2, 4, 8],
                                          **policy}]},
        # Difficulty varies by construction (depth 1 to 6) and the planted model fails
        # deep chains: the probe's first sample is the signal to find.
        "suites": [{"name": "arith", "n": 16, "depth": [1, 6]}],
        "simulation": {"skill": 0.5, "difficulty_weight": 6.0, "token_weight": 0.0},
        "run": {"concurrency": 4, "split": {"solver": 1.0}},
    })


def _records(out: Path) -> list[RunRecord]:
    with ResultsStore(out / "results.sqlite") as rs:
        return rs.records()


def test_it_calibrates_apart_chooses_per_query_and_records_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(out)
    asyncio.run(run_ablation(config))
    (saved,) = out.glob("calibration-*.json")
    table = CalibrationTable.load(saved)
    recs = _records(out)
    evaluated = {r.task_id for r in recs}
    questions = set(json.loads(saved.read_text())["meta"]["questions"])
    assert table.queries == 24 * 2 and len(questions) == 24
    with LedgerStore(out / "ledger.sqlite") as store:
        # Calibration tasks are drawn apart: none is an evaluated question.
        ev_questions = {e.labels.get("task") for e in store.entries()
                        if e.labels.get("phase") != "calibration"}
        cal_rows = [e for e in store.entries() if e.labels.get("phase") == "calibration"]
        transfers = store.transfers()
    assert cal_rows and ev_questions == evaluated
    co = [r for r in recs if r.policy == "co"]
    assert len(co) == 32 and all(r.transfers == 1 for r in co)
    choices = [t for t in transfers if t.from_role == "policy"]
    assert len(choices) == 32
    assert all(t.reason.startswith("compute_optimal: probe ") for t in choices)
    assert {r.mode for r in co} <= set(table.options)

    # The planted signal: a verified first sample means stop, so those queries cost one
    # sample; the policy spends its tokens on queries whose probe failed.
    stopped = [r for r in co if r.calls == 1]
    went_on = [r for r in co if r.calls > 1]
    assert stopped and went_on
    assert all(r.correct for r in stopped)
    uni = [r for r in recs if r.policy == "uniform"]
    assert sum(r.tokens_total for r in co) < 0.6 * sum(r.tokens_total for r in uni)
    # In expectation at the batch's total (tokens per query at most the budget, here).
    assert sum(r.tokens_total for r in co) / len(co) <= 1600

    # Rerun in a new folder holding the table: it is reused, nothing calibrates again.
    again = tmp_path / "again"
    again.mkdir()
    (again / saved.name).write_bytes(saved.read_bytes())
    asyncio.run(run_ablation(_config(again)))
    with LedgerStore(again / "ledger.sqlite") as store:
        assert not [e for e in store.entries() if e.labels.get("phase") == "calibration"]
    assert [(r.run_id, r.mode) for r in sorted(_records(again), key=lambda r: r.run_id)] == \
        [(r.run_id, r.mode) for r in sorted(recs, key=lambda r: r.run_id)]


def test_the_table_learns_that_a_failed_probe_predicts_failure() -> None:
    from stratagem.budgets import PoolSample

    def pool(pattern: str) -> list[PoolSample]:
        return [PoolSample(str(i), c == "1", 50) for i, c in enumerate(pattern)]

    # Easy queries pass the probe; hopeless ones never pass; some pass late.
    pools = [pool("11111111")] * 10 + [pool("00000000")] * 10 + [pool("00010000")] * 5
    table = CalibrationTable.fit(pools, probe=1, samples=(2, 4, 8), verifier=True)
    assert set(table.cells) == {"verified", "agree1/1"}
    acc_stop, _ = table.expected("agree1/1", "stop")
    acc_seq, tokens_seq = table.expected("agree1/1", "sequential:8")
    assert acc_stop < 0.15 < acc_seq and tokens_seq > 200
    assert table.best("verified", price=0.0).option == "stop"
    assert table.best("agree1/1", price=0.0).option in ("sequential:4", "sequential:8")
    assert table.best("agree1/1", price=0.01).option == "stop"   # tokens too dear
    # The price meets a budget in expectation over the calibration mix.
    price = table.price_for(100.0)
    assert table.mean_tokens(price) <= 100.0 < table.mean_tokens(0.0)
    assert CalibrationTable.from_json(table.to_json()) == table
