"""Group commit: concurrent rows and intents of one event loop share a transaction, and each
is durable when its call returns (the promise of ``complete``, kept)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stratagem.budgets import Account, LedgerEntry, LedgerStore, TokenLedger, Usage
from stratagem.errors import LedgerError


def _row(**kw: Any) -> LedgerEntry:
    fields: dict[str, Any] = {"model": "m", "role": "solver", "prompt_tokens": 10,
                              "completion_tokens": 5}
    fields.update(kw)
    return LedgerEntry(**fields)


def _on_disk(path: Path) -> int:
    with sqlite3.connect(path) as conn:  # another connection: what a crash would leave
        return int(conn.execute("SELECT COUNT(*) FROM ledger_calls").fetchone()[0])


class _Counting(LedgerStore):
    """A store that counts its transactions."""

    groups: list[tuple[int, int]]

    def write_group(self, intents: Any, rows: Any, owner: str) -> None:
        self.groups.append((len(intents), len(rows)))
        super().write_group(intents, rows, owner)


def test_rows_completed_together_share_one_commit_and_are_durable_on_return(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    store = _Counting(path)
    store.groups = []
    ledger = TokenLedger(store)
    rows = [_row() for _ in range(64)]

    async def one(row: LedgerEntry) -> int:
        assert await ledger.acomplete(row) is True
        return _on_disk(path)

    async def fan_out() -> list[int]:
        return await asyncio.gather(*(one(r) for r in rows))

    seen_on_disk = asyncio.run(fan_out())
    assert store.groups == [(0, 64)]  # one transaction for the 64
    assert min(seen_on_disk) == 64   # every caller found its row (and the others) on disk
    assert ledger.totals().calls == 64 and len(store.entries()) == 64
    store.close()


def test_a_row_recorded_twice_in_one_group_counts_once(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "ledger.sqlite") as store:
        ledger = TokenLedger(store)
        row = _row()

        async def twice() -> list[bool]:
            return await asyncio.gather(ledger.acomplete(row), ledger.acomplete(row))

        assert sorted(asyncio.run(twice())) == [False, True]
        assert asyncio.run(twice()) == [False, False]  # already recorded
        assert len(store.entries()) == 1


def test_intents_and_rows_of_one_step_commit_together_and_close_each_other(
        tmp_path: Path) -> None:
    store = _Counting(tmp_path / "ledger.sqlite")
    store.groups = []
    ledger = TokenLedger(store)
    lost = [_row(status="lost", usage_source="bound") for _ in range(3)]

    async def flow() -> None:
        await asyncio.gather(*(ledger.aopen_intent(e) for e in lost))
        assert len(store.intents()) == 3 and len(ledger.intents()) == 3
        await asyncio.gather(*(ledger.acomplete(e.model_copy(update={"status": "ok"}))
                               for e in lost))

    asyncio.run(flow())
    assert store.groups == [(3, 0), (0, 3)]
    assert store.intents() == [] and ledger.intents() == []
    assert [e.status for e in store.entries()] == ["ok"] * 3
    store.close()


def test_a_failed_group_write_fails_every_caller_and_records_nothing(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    ledger = TokenLedger(store)
    store.close()  # every write now fails

    async def fan_out() -> list[BaseException | bool]:
        return await asyncio.gather(*(ledger.acomplete(_row()) for _ in range(5)),
                                    return_exceptions=True)

    results = asyncio.run(fan_out())
    assert all(isinstance(r, LedgerError) for r in results), results
    assert ledger.totals().calls == 0


def test_a_caller_cancelled_while_it_waits_still_has_its_row_written(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with LedgerStore(path) as store:
        ledger = TokenLedger(store)
        row = _row()

        async def flow() -> None:
            task = asyncio.ensure_future(ledger.acomplete(row))
            await asyncio.sleep(0)  # the task has added its row and waits for the commit
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert _on_disk(path) == 1  # written before the cancellation reached the caller

        asyncio.run(flow())
        assert row.call_id in ledger


def test_the_account_closes_calls_in_a_loop_with_the_same_row_events_and_budget(
        tmp_path: Path) -> None:
    from stratagem.budgets import Budget, CallRecorded

    with LedgerStore(tmp_path / "ledger.sqlite") as store:
        budget = Budget(total=1000)
        account = Account(TokenLedger(store), budget, run_id="r1")
        seen: list[Any] = []
        account.subscribe(seen.append)

        async def calls() -> list[LedgerEntry]:
            async def one() -> LedgerEntry:
                call = account.open_call(role="solver", model="m", input_estimate=10,
                                         max_output=50)
                await account.asending(call)
                return await account.aclose_call(call, Usage(10, 7, None, None, "provider"))
            return await asyncio.gather(*(one() for _ in range(4)))

        rows = asyncio.run(calls())
        assert budget.spent() == 4 * 17 == account.totals().total_tokens
        assert [type(e) for e in seen].count(CallRecorded) == 4
        assert {r.call_id for r in rows} == {e.call_id for e in store.entries()}
        assert store.intents() == []
