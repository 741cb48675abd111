"""The account: the one place a row enters the ledger, used with or without a ModelClient."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stratagem.budgets import (
    Account,
    Budget,
    BudgetThreshold,
    CallRecorded,
    LedgerStore,
    Pricing,
    TokenLedger,
    TransferRecorded,
    Usage,
)
from stratagem.errors import BudgetExceeded, ConfigError


def test_a_call_is_recorded_with_no_model_client() -> None:
    account = Account(budget=Budget(total=1000), run_id="r1", labels={"suite": "x"})
    call = account.open_call(role="solver", model="gpt-4o-mini", input_estimate=40,
                             max_output=2000)
    assert call.max_output == 960  # clamped by the budget
    row = account.close_call(call, Usage(38, 120, cached_tokens=10))
    assert (row.run_id, row.role, row.cap_sent, row.labels) == ("r1", "solver", 960,
                                                                 {"suite": "x"})
    assert row.cost_usd is not None and row.cost_usd > 0  # the one price table
    assert account.totals().total_tokens == 158 == account.spent()
    assert account.remaining() == 842
    assert account.ledger.entries() == [row]


def test_record_charges_an_observed_call_once() -> None:
    budget = Budget(total=500)
    account = Account(budget=budget, run_id="r")
    first = account.record(Usage(10, 5), model="m", role="critic", call_id="abc")
    again = account.record(Usage(10, 5), model="m", role="critic", call_id="abc")
    assert first == again and len(account.ledger) == 1 and budget.spent() == 15
    assert account.by_role()["critic"].total_tokens == 15  # any role name


def test_bind_stamps_the_identity_and_needs_a_role() -> None:
    account = Account(run_id="r").bind(node="critic_node", task_id="t1", branch="2")
    with pytest.raises(ConfigError, match="needs a role"):
        account.record(Usage(1, 1), model="m")
    row = account.bind(role="critic").record(Usage(1, 1), model="m")
    assert (row.node, row.task_id, row.branch, row.role) == ("critic_node", "t1", "2", "critic")


def test_a_refused_reservation_records_nothing() -> None:
    account = Account(budget=Budget(total=30), run_id="r")
    with pytest.raises(BudgetExceeded):
        account.open_call(role="solver", model="m", input_estimate=25, max_output=100)
    assert len(account.ledger) == 0 and account.budget is not None
    assert account.budget.reserved() == 0


def test_release_gives_the_reservation_back_and_drops_the_intent() -> None:
    budget = Budget(total=100)
    account = Account(budget=budget)
    call = account.open_call(role="solver", model="m", input_estimate=10, max_output=50)
    account.sending(call)
    assert [e.call_id for e in account.ledger.intents()] == [call.call_id]
    account.release(call)
    assert budget.reserved() == 0 and account.ledger.intents() == [] and len(account.ledger) == 0


def test_two_price_tables_are_refused() -> None:
    mine = Pricing.default()
    with pytest.raises(ConfigError, match=r"one\s+Pricing"):
        Account(budget=Budget(total=1, pricing=Pricing.default()), pricing=mine)
    assert Account(budget=Budget(total=1, pricing=mine)).pricing is mine


def test_transfers_and_thresholds_are_events() -> None:
    budget = Budget(total=100, roles={"planner": 40, "solver": 60})
    account = Account(budget=budget, run_id="r")
    events: list[object] = []
    unsubscribe = account.subscribe(events.append)
    moved = account.transfer("planner", "solver", 20, "planner skipped")
    call = account.open_call(role="solver", model="m", input_estimate=10, max_output=70)
    account.close_call(call, Usage(10, 60))  # 70 of the solver's 80, 70 of the total 100
    unsubscribe()
    account.record(Usage(1, 1), model="m", role="solver")
    kinds = [type(e) for e in events]
    assert kinds[:2] == [TransferRecorded, CallRecorded]
    assert account.ledger.transfers() == [moved] and moved.run_id == "r"
    crossed = [(e.role, e.fraction) for e in events if isinstance(e, BudgetThreshold)]
    assert crossed == [("solver", 0.8)]  # 70/100 of the total is below 0.8; 70/80 is above
    assert len(events) == 3  # nothing after unsubscribing


def test_an_account_without_a_budget_cannot_move_budget() -> None:
    with pytest.raises(ConfigError, match="no budget"):
        Account().transfer("planner", "solver", 1, "why")


CHILD = """
import os, sys
from stratagem.budgets import Account, Budget, LedgerStore, TokenLedger
account = Account(TokenLedger(LedgerStore(sys.argv[1])), Budget(total=1000), run_id="r9")
call = account.open_call(role="solver", model="m", input_estimate=30, prompt_estimate=28,
                         max_output=200)
account.sending(call)
print("SENT", flush=True)
os.kill(os.getpid(), 9)
"""


def test_an_intent_of_a_killed_process_becomes_a_lost_row(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL and "SENT" in child.stdout, child.stderr[-2000:]
    with LedgerStore(path) as store:
        ledger = TokenLedger(store)
        (row,) = ledger.entries()
        assert ledger.recovered == 1 and store.intents() == []
    assert (row.status, row.usage_source, row.run_id) == ("lost", "bound", "r9")
    assert (row.prompt_tokens, row.completion_tokens, row.cap_sent) == (28, 200, 200)
    assert "in flight" in (row.error or "")
    # billed in the ledger's total, not in the run's own (one execution's) spend
    assert ledger.totals().lost_calls == 1
    assert Account(ledger, run_id="r9").totals().total_tokens == 0


def test_intents_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    account = Account(TokenLedger(LedgerStore(path)), run_id="r")
    call = account.open_call(role="solver", model="m", input_estimate=5, max_output=5)
    account.sending(call)
    with LedgerStore(path) as store:  # opened again by this (living) process
        assert TokenLedger(store).recovered == 0 and len(store.intents()) == 1
    account.close_call(call, Usage(5, 5))
    with LedgerStore(path) as store:
        assert store.intents() == [] and len(store) == 1
