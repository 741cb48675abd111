from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratagem.budgets import (
    Account,
    Budget,
    DifficultyAdaptive,
    JudgeFeedback,
    LedgerEntry,
    TokenLedger,
    Uniform,
    Usage,
    apportion,
)
from stratagem.errors import ConfigError


@given(st.lists(st.floats(0, 10), min_size=1, max_size=50), st.integers(0, 10**7))
def test_apportion_sums_exactly_and_is_monotone(weights: list[float], total: int) -> None:
    shares = apportion(weights, total)
    assert sum(shares) == total and all(s >= 0 for s in shares)
    pairs = list(zip(weights, shares, strict=True))
    for wa, sa in pairs:
        for wb, sb in pairs:
            if wa > wb:
                assert sa >= sb


@given(st.lists(st.floats(0, allow_nan=False, allow_infinity=False), min_size=1, max_size=50),
       st.integers(0, 10**7))
def test_apportion_takes_any_finite_weights(weights: list[float], total: int) -> None:
    shares = apportion(weights, total)
    assert sum(shares) == total and all(s >= 0 for s in shares)


@pytest.mark.parametrize("weights,total,expected", [
    ([1e308, 1e308], 1001, [501, 500]),  # the sum alone would overflow
    ([1.7976931348623157e308, 1.0], 10, [10, 0]),  # so would the largest weight * total
    ([5e-324, 5e-324], 3, [2, 1]),  # the smallest subnormals still split evenly
])
def test_apportion_at_the_limits_of_floats(weights: list[float], total: int,
                                           expected: list[int]) -> None:
    assert apportion(weights, total) == expected


def test_uniform_and_adaptive_spend_the_same_total() -> None:
    diffs = [0.1, 0.9, None, 0.5]
    uni = Uniform().allocate(diffs, 10_000)
    ada = DifficultyAdaptive().allocate(diffs, 10_000)
    assert sum(uni) == sum(ada) == 10_000
    assert uni == [2500] * 4
    assert ada[1] > ada[3] > ada[0]  # harder gets more
    assert ada[2] == ada[3]  # unknown counts as the mean known difficulty (0.5)


def test_adaptive_can_skip_hopeless_tasks() -> None:
    shares = DifficultyAdaptive(skip_above=0.8).allocate([0.5, 0.95], 1000)
    assert shares[0] > shares[1]


def test_bad_policy_parameters() -> None:
    with pytest.raises(ConfigError):
        DifficultyAdaptive(exponent=0)
    with pytest.raises(ConfigError):
        JudgeFeedback(threshold=2)
    with pytest.raises(ConfigError):
        apportion([1.0], -1)


def test_judge_feedback_moves_unspent_budget_and_records_why() -> None:
    ledger = TokenLedger()
    budget = Budget(total=3000, roles={"planner": 500, "decomposer": 500, "solver": 1500,
                                       "judge": 500})
    account = Account(ledger, budget, run_id="r")
    budget.commit(budget.reserve("planner", 100, 100), Usage(100, 100))
    policy = JudgeFeedback(threshold=0.5)
    decision = policy.on_verdict(account, score=0.2, accepted=False, verified=False,
                                 node="judge")
    assert [(t.from_role, t.tokens) for t in decision.transfers] == [
        ("planner", 300), ("decomposer", 500)]
    assert decision.extra_samples == 2 and not decision.stop
    assert budget.limit("solver") == 2300 and budget.limit("planner") == 200
    assert all("0.20 < 0.5" in t.reason and t.node == "judge" for t in ledger.transfers())
    again = policy.on_verdict(account, score=0.2, accepted=False, verified=False, node="judge")
    assert again.transfers == ()  # nothing left to move
    assert all(t.run_id == "r" for t in ledger.transfers())


def test_judge_feedback_confident_or_verified() -> None:
    budget = Budget(total=100, roles={"planner": 50, "solver": 50})
    policy = JudgeFeedback()
    assert policy.on_verdict(budget, score=0.9, accepted=True, verified=False,
                             node="j").transfers == ()
    stop = policy.on_verdict(budget, score=1.0, accepted=True, verified=True, node="j")
    assert stop.stop and "verifier" in stop.reason


def test_restore_replays_spend_and_transfers() -> None:
    ledger = TokenLedger()
    first = Budget(total=1000, roles={"planner": 300, "solver": 500})
    first.commit(first.reserve("planner", 10, 10), Usage(10, 10))
    Account(ledger, first).transfer("planner", "solver", 100, "x")
    ledger.append(LedgerEntry(role="planner", model="m", prompt_tokens=10, completion_tokens=10))
    again = Budget(total=1000, roles={"planner": 300, "solver": 500})
    again.restore(ledger.entries(), ledger.transfers())
    assert again.snapshot() == first.snapshot()
    assert again.unspent("planner") == 180 and again.unspent("judge") is None


@pytest.mark.parametrize("difficulties,total,expected", [
    ([0.9, 0.0], 90, [0, 90]),            # the hopeless task gets nothing
    ([0.0, 0.9, 0.0], 90, [45, 0, 45]),   # floor 0 and difficulty 0: the kept tasks share
    ([0.9, 0.95], 90, [45, 45]),          # every task hopeless: the total is still spent
])
def test_a_zero_skip_weight_gives_hopeless_tasks_nothing(difficulties: list[float], total: int,
                                                         expected: list[int]) -> None:
    policy = DifficultyAdaptive(floor=0.0, skip_above=0.5, skip_weight=0.0)
    assert policy.allocate(difficulties, total) == expected
