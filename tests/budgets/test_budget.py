from __future__ import annotations

import asyncio
import random
import threading

import pytest

from stratagem.budgets import Account, Budget, Pricing, TokenLedger, Usage
from stratagem.errors import BudgetExceeded, ConfigError, PricingError


def test_reserve_clamps_output_to_what_remains() -> None:
    b = Budget(total=1000, roles={"solver": 600})
    r = b.reserve("solver", input_estimate=100, max_output=2000)
    assert r.max_output == 500 and r.tokens == 600
    assert b.remaining("solver") == 0 and b.remaining() == 400
    b.commit(r, Usage(98, 420))
    assert b.spent("solver") == 518 and b.spent() == 518
    assert b.remaining("solver") == 82 and b.reserved() == 0
    assert b.overshoot_tokens == 0


def test_role_without_cap_is_limited_by_the_total() -> None:
    b = Budget(total=300, roles={"solver": 100})
    r = b.reserve("judge", 50, 1000)
    assert r.max_output == 250
    assert b.remaining("judge") == 0


def test_budget_exceeded_carries_kind_role_limit_requested_spent() -> None:
    b = Budget(total=1000, roles={"planner": 100}, min_output_tokens=16)
    b.commit(b.reserve("planner", 50, 10), Usage(50, 10))
    with pytest.raises(BudgetExceeded) as info:
        b.reserve("planner", 30, 100)
    err = info.value
    assert (err.kind, err.role, err.limit, err.requested, err.spent) == (
        "tokens", "planner", 100, 46, 60)
    assert "role 'planner'" in str(err)
    b2 = Budget(total=20)
    with pytest.raises(BudgetExceeded) as total_info:
        b2.reserve("solver", 10, 100)
    assert total_info.value.role is None and "run total" in str(total_info.value)


def test_release_frees_and_double_commit_is_refused() -> None:
    b = Budget(total=100)
    r = b.reserve("solver", 10, 50)
    assert b.reserved() == 60
    b.release(r)
    b.release(r)
    assert b.reserved() == 0 and b.spent() == 0
    r2 = b.reserve("solver", 10, 50)
    b.commit(r2, Usage(10, 50))
    with pytest.raises(ValueError, match="already committed"):
        b.commit(r2, Usage(10, 50))


def test_input_estimate_error_is_measured_as_overshoot() -> None:
    b = Budget(total=100)
    r = b.reserve("solver", 10, 50)
    b.commit(r, Usage(25, 50))  # the estimate was 15 tokens short
    assert b.overshoot_tokens == 15 and b.spent() == 75


def _hammer_threads(b: Budget, workers: int) -> list[int]:
    committed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(5):
            try:
                r = b.reserve("solver", rng.randint(5, 30), rng.randint(1, 80))
            except BudgetExceeded:
                continue
            used = Usage(r.input_tokens, rng.randint(0, r.max_output))
            b.commit(r, used)
            with lock:
                committed.append(used.total_tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return committed


def test_200_concurrent_threads_never_overspend() -> None:
    b = Budget(total=5000, roles={"solver": 3000})
    committed = _hammer_threads(b, 200)
    assert sum(committed) == b.spent("solver") <= 3000
    assert b.spent() <= 5000 and b.reserved() == 0
    assert len(committed) > 20  # the cap, not a crash, is what stopped them


def test_200_concurrent_asyncio_tasks_never_overspend() -> None:
    b = Budget(total=4000, roles={"solver": 2500})

    async def task(seed: int) -> int:
        rng = random.Random(seed)
        try:
            r = b.reserve("solver", rng.randint(5, 30), rng.randint(1, 80))
        except BudgetExceeded:
            return 0
        await asyncio.sleep(rng.random() / 100)
        used = Usage(r.input_tokens, rng.randint(0, r.max_output))
        b.commit(r, used)
        return used.total_tokens

    async def main() -> list[int]:
        return list(await asyncio.gather(*(task(i) for i in range(200))))

    spent = asyncio.run(main())
    assert sum(spent) == b.spent("solver") <= 2500
    assert b.reserved() == 0


def test_a_budget_given_a_ledger_still_records_its_transfers_with_a_warning() -> None:
    ledger = TokenLedger()
    with pytest.warns(DeprecationWarning, match="Account"):
        b = Budget(total=100, roles={"planner": 50, "solver": 50}, ledger=ledger, run_id="r1")
    t = b.transfer("planner", "solver", 10, "why")
    assert ledger.transfers() == [t] and t.run_id == "r1"


def test_transfer_moves_unspent_budget_and_is_recorded() -> None:
    ledger = TokenLedger()
    b = Budget(total=1000, roles={"planner": 300, "solver": 500})
    account = Account(ledger, b, run_id="r1")
    b.commit(b.reserve("planner", 50, 50), Usage(50, 50))
    held = b.reserve("planner", 50, 50)
    t = account.transfer("planner", "solver", 100, "judge confidence 0.3 < 0.5", node="judge")
    assert (b.limit("planner"), b.limit("solver"), b.limit()) == (200, 600, 1000)
    assert ledger.transfers() == [t]
    assert (t.run_id, t.node, t.tokens) == ("r1", "judge", 100)
    with pytest.raises(BudgetExceeded) as info:  # only 200 - 100 spent - 100 held = 0 unspent
        b.transfer("planner", "solver", 1, "more")
    assert info.value.role == "planner"
    b.release(held)
    b.transfer("planner", "solver", 100, "after release")
    assert len(ledger.transfers()) == 1  # a bare budget's moves are not recorded: the account's are
    with pytest.raises(ConfigError, match="no token cap"):
        b.transfer("planner", "judge", 1, "judge uncapped")
    with pytest.raises(ValueError, match="positive"):
        b.transfer("planner", "solver", 0, "nothing")


def test_dollar_caps_clamp_output_and_need_a_price() -> None:
    b = Budget(total_usd=0.01, pricing=Pricing.default())
    r = b.reserve("solver", 1000, 100_000, model="gpt-4o")
    # $0.01 - 1000 x $2.50/M = $0.0075 left for output at $10/M -> 750 tokens
    assert r.max_output == 750
    assert r.usd == pytest.approx(0.01)
    b.commit(r, Usage(1000, 750))
    assert b.spent_usd() == pytest.approx(0.01)
    with pytest.raises(BudgetExceeded) as info:
        b.reserve("solver", 10, 10, model="gpt-4o")
    assert info.value.kind == "usd"
    with pytest.raises(PricingError, match="no known price"):
        Budget(total_usd=1.0).reserve("solver", 10, 10, model="mystery-model")


@pytest.mark.parametrize(
    "kwargs", [{"total": -5}, {"roles": {"solver": -1}}, {"min_output_tokens": 0}]
)
def test_bad_caps_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_snapshot_and_uncapped_budget() -> None:
    b = Budget()
    r = b.reserve("solver", 10, 100)
    assert r.max_output == 100 and b.remaining() is None
    b.commit(r, Usage(10, 20))
    snap = b.snapshot()
    assert snap["total"] == {"limit": None, "spent": 30, "reserved": 0, "remaining": None}
    assert snap["solver"]["spent"] == 30
