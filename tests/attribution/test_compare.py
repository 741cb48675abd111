"""Topologies at matched compute, and waste per topology."""

from __future__ import annotations

from typing import cast

import pandas as pd
import pytest

from stratagem.attribution import (
    Interval,
    compare_topologies,
    matched_compute_ranking,
    waste_by_topology,
)
from stratagem.errors import ConfigError
from stratagem.simulate import DEFAULT_WASTE_RATES, LatentEffects, latent_runs

TOPOLOGIES = ["single", "best_of_n", "tree"]


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    effects = LatentEffects(topology_effects={"single": -0.1, "tree": 0.1}, noise=0.2)
    return latent_runs(effects, topologies=TOPOLOGIES, budgets=[2000, 500, 8000],
                       seeds=(0, 1), tasks_per_cell=100, seed=4)


def test_one_comparison_per_budget_with_ranked_rows(runs: pd.DataFrame) -> None:
    cells = compare_topologies(runs)
    assert [c.budget for c in cells] == [500, 2000, 8000]
    for cell in cells:
        assert set(cell.rows) == set(TOPOLOGIES)
        ranks = [cast(int, row["rank"]) for row in cell.rows.values()]
        assert ranks == sorted(ranks) and ranks[0] == 1
        for topo, row in cell.rows.items():
            acc = row["accuracy"]
            assert isinstance(acc, Interval)
            assert 0 <= acc.low <= acc.estimate <= acc.high <= 1
            assert row["n"] == 200 and row["target"] == cell.budget
            sub = runs[(runs.budget == cell.budget) & (runs.topology == topo)]
            assert acc.estimate == pytest.approx(sub["correct"].mean())
            assert row["mean_tokens"] == pytest.approx(sub["tokens_total"].mean())
            assert row["mean_tokens"] == pytest.approx(cell.budget, rel=0.1)  # noise 0.2
    assert next(iter(cells[-1].rows)) == "tree"


def test_wilson_interval_and_ties() -> None:
    df = pd.DataFrame({"topology": ["a", "a", "b", "b", "c", "c"], "budget": 100,
                       "tokens_total": [90, 110, 100, 100, 80, 80],
                       "correct": [True, False, False, True, False, False]})
    (cell,) = compare_topologies(df)
    assert [cell.rows[t]["rank"] for t in ("a", "b", "c")] == [1, 1, 3]
    a = cell.rows["a"]["accuracy"]
    assert isinstance(a, Interval)
    assert (a.estimate, round(a.low, 4), round(a.high, 4)) == (0.5, 0.0945, 0.9055)
    c = cell.rows["c"]["accuracy"]
    assert isinstance(c, Interval)
    assert (c.estimate, c.low, round(c.high, 4)) == (0.0, 0.0, 0.6576)


def test_non_binary_outcome_gets_a_normal_interval() -> None:
    df = pd.DataFrame({"topology": ["a"] * 4, "budget": 100, "tokens_total": 100,
                       "score": [0.2, 0.4, 0.6, 0.8]})
    (cell,) = compare_topologies(df, outcome="score")
    acc = cell.rows["a"]["accuracy"]
    assert isinstance(acc, Interval)
    assert acc.estimate == pytest.approx(0.5) and acc.low < 0.5 < acc.high


def test_ranking_uses_only_budgets_every_topology_ran() -> None:
    df = pd.DataFrame({
        "topology": ["a", "a", "b", "b", "b", "b"],
        "budget": [1, 1, 1, 1, 2, 2],
        "correct": [True, True, False, True, True, True],
    })
    assert matched_compute_ranking(df) == ["a", "b"]  # b's perfect budget-2 cell is unmatched
    with pytest.raises(ConfigError, match="no budget cell has runs of every topology"):
        matched_compute_ranking(pd.DataFrame({"topology": ["a", "b"], "budget": [1, 2],
                                              "correct": [True, False]}))


def test_comparison_errors(runs: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="empty"):
        compare_topologies(runs.iloc[0:0])
    with pytest.raises(ConfigError, match="'budget' is missing"):
        compare_topologies(runs.drop(columns="budget"))
    with pytest.raises(ConfigError, match="no run has a value"):
        matched_compute_ranking(runs.assign(correct=None))


def test_waste_by_topology_recovers_planted_rates(runs: pd.DataFrame) -> None:
    table = waste_by_topology(runs)
    assert list(table.columns) == ["topology", "n", "mean_billed", "mean_accepted",
                                   "mean_waste", "waste_share"]
    assert list(table["topology"]) == sorted(TOPOLOGIES)
    for row in table.itertuples():
        assert row.n == 600
        assert row.mean_billed == pytest.approx(row.mean_accepted + row.mean_waste)
        assert row.waste_share == pytest.approx(DEFAULT_WASTE_RATES[row.topology], abs=0.01)
    with pytest.raises(ConfigError, match="'waste_tokens' is missing"):
        waste_by_topology(runs.drop(columns="waste_tokens"))


def test_waste_share_of_a_topology_that_billed_nothing_is_zero() -> None:
    df = pd.DataFrame({"topology": ["a"], "tokens_total": [0], "accepted_tokens": [0],
                       "waste_tokens": [0]})
    assert waste_by_topology(df)["waste_share"].tolist() == [0.0]
