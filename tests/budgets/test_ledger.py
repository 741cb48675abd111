from __future__ import annotations

import asyncio
import csv
import json
import threading
from pathlib import Path

import pytest

from stratagem.budgets import LedgerEntry, LedgerStore, TokenLedger, Transfer
from stratagem.errors import ConfigError, LedgerError


def _row(role: str = "solver", **kw: object) -> LedgerEntry:
    fields: dict[str, object] = {"model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 5}
    fields.update(kw)
    return LedgerEntry(role=role, **fields)  # type: ignore[arg-type]


def test_same_call_id_counts_once() -> None:
    ledger = TokenLedger()
    row = _row()
    assert ledger.append(row) is True
    assert ledger.append(row) is False
    assert ledger.append(row.model_copy()) is False
    assert len(ledger) == 1
    assert ledger.totals().total_tokens == 15


def test_totals_are_sums_of_rows_and_unknown_is_not_zero() -> None:
    ledger = TokenLedger()
    ledger.append(_row(cached_tokens=4, cost_usd=0.001))
    ledger.append(_row(cost_usd=None))  # cached unknown, price unknown
    ledger.append(_row(role="judge", reasoning_tokens=2, cost_usd=0.002, status="error"))
    t = ledger.totals()
    assert (t.calls, t.prompt_tokens, t.completion_tokens) == (3, 30, 15)
    assert t.cached_tokens == 4 and t.cached_unknown == 2
    assert t.reasoning_tokens == 2 and t.reasoning_unknown == 2
    assert t.cost_usd == pytest.approx(0.003) and t.cost_unknown == 1
    assert t.error_calls == 1
    solver = ledger.totals(role="solver")
    assert solver.reasoning_tokens is None  # no solver row reports it: unknown, not 0


def test_group_by_fields_aliases_labels_and_pairs() -> None:
    ledger = TokenLedger()
    ledger.append(_row("planner", node="plan", run_id="r1", labels={"topology": "plan_solve"}))
    ledger.append(_row("solver", node="solve", run_id="r1", labels={"topology": "plan_solve"}))
    ledger.append(_row("solver", node="solve", run_id="r2", labels={"topology": "single"}))
    by_role = ledger.group_by("role")
    assert list(by_role) == ["planner", "solver"]
    assert by_role["solver"].calls == 2
    assert ledger.group_by("run")["r2"].calls == 1
    assert ledger.group_by("label:topology")["plan_solve"].calls == 2
    pairs = ledger.group_by("run_id", "role")
    assert pairs[("r1", "solver")].total_tokens == 15
    filtered = ledger.group_by("role", **{"label:topology": "single"})
    assert list(filtered) == ["solver"]
    assert ledger.totals(role=["planner", "solver"], run_id="r1").calls == 2
    with pytest.raises(ConfigError, match="cannot group"):
        ledger.group_by("colour")


def test_threads_and_tasks_append_without_loss_or_duplicates() -> None:
    ledger = TokenLedger()
    rows = [_row(branch=str(i)) for i in range(2000)]

    def worker(chunk: list[LedgerEntry]) -> None:
        for r in chunk:
            ledger.append(r)
            ledger.append(r)  # a recording retry must not double count

    threads = [threading.Thread(target=worker, args=(rows[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def main() -> None:
        async def one(r: LedgerEntry) -> None:
            await asyncio.sleep(0)
            ledger.append(r)

        await asyncio.gather(*(one(r) for r in rows[:500]))
        await asyncio.gather(*(one(_row(branch=f"a{i}")) for i in range(500)))

    asyncio.run(main())
    assert len(ledger) == 2500
    assert ledger.totals().total_tokens == 2500 * 15


def test_write_through_store_and_reload(tmp_path: object) -> None:
    path = f"{tmp_path}/ledger.sqlite"
    store = LedgerStore(path)
    ledger = TokenLedger(store)
    ledger.append(_row())
    ledger.record_transfer(Transfer(from_role="planner", to_role="solver", tokens=9, reason="r"))
    store.close()
    with LedgerStore(path) as again:
        reopened = TokenLedger(again)
        assert len(reopened) == 1
        assert reopened.transfers()[0].tokens == 9
        assert reopened.append(ledger.entries()[0]) is False


def test_rows_without_usage_are_their_own_source_in_store_exports_and_totals(
    tmp_path: Path,
) -> None:
    with LedgerStore(tmp_path / "ledger.sqlite") as store:
        ledger = TokenLedger(store)
        ledger.append(_row())
        ledger.append(_row(usage_source="estimate"))
        ledger.append(_row(prompt_tokens=0, completion_tokens=0, usage_source="none",
                           status="error"))
    with LedgerStore(tmp_path / "ledger.sqlite") as again:
        reopened = TokenLedger(again)
        assert [e.usage_source for e in reopened.entries()] == ["provider", "estimate", "none"]
        by_source = reopened.group_by("source")
        assert {k: t.calls for k, t in by_source.items()} == {
            "estimate": 1, "none": 1, "provider": 1}
        totals = reopened.totals()
        assert totals.estimated_calls == 1 and totals.error_calls == 1  # zeros are no estimate
        reopened.export_csv(tmp_path / "ledger.csv")
        reopened.export_jsonl(tmp_path / "ledger.jsonl")
    with (tmp_path / "ledger.csv").open(encoding="utf-8") as f:
        assert [r["usage_source"] for r in csv.DictReader(f)] == ["provider", "estimate", "none"]
    lines = (tmp_path / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
    assert [LedgerEntry.model_validate({k: v for k, v in json.loads(line).items()
                                        if k != "type"}).usage_source for line in lines] == [
        "provider", "estimate", "none"]


def test_a_failed_durable_write_records_nothing() -> None:
    store = LedgerStore()
    ledger = TokenLedger(store)
    store.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.append(_row())
    assert len(ledger) == 0


def test_transfers_are_deduplicated_and_filtered_by_run() -> None:
    ledger = TokenLedger()
    t = Transfer(run_id="r1", from_role="planner", to_role="solver", tokens=3, reason="x")
    assert ledger.record_transfer(t) and not ledger.record_transfer(t)
    ledger.record_transfer(Transfer(run_id="r2", from_role="a", to_role="b", tokens=1, reason="y"))
    assert [x.run_id for x in ledger.transfers("r1")] == ["r1"]
    assert len(ledger.transfers()) == 2


def test_upper_bound_rows_say_how_much_of_the_total_is_a_bound() -> None:
    ledger = TokenLedger()
    ledger.append(_row(usage_source="bound", status="error", completion_tokens=32, cap_sent=32))
    ledger.append(_row(usage_source="bound", status="lost", completion_tokens=24, cap_sent=24))
    ledger.append(_row())  # provider usage: exact
    t = ledger.totals()
    assert (t.bound_calls, t.bound_completion_tokens) == (2, 56)
    assert t.as_dict()["bound_completion_tokens"] == 56
    assert ledger.group_by("status")["ok"].bound_completion_tokens == 0
