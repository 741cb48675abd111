"""LMG shares: exactness against brute force, collinear groups, bootstrap, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from stratagem.attribution import Attribution, attribute, shapley
from stratagem.errors import ConfigError
from stratagem.simulate import LatentEffects, latent_runs


def _mixed(n: int = 600, seed: int = 3) -> pd.DataFrame:
    """Correlated groups: topology tracks spend, mode mostly tracks topology, difficulty apart."""
    rng = np.random.default_rng(seed)
    tokens = np.rint(2 ** rng.uniform(8, 14, n)).astype(int)
    topo = np.where(tokens > 2000, rng.choice(["tree", "refine"], n),
                    rng.choice(["single", "refine"], n))
    mode = np.where(rng.random(n) < 0.8, topo, rng.choice(["direct", "parallel"], n))
    difficulty = rng.random(n)
    score = (0.05 * np.log2(tokens) + 0.1 * (topo == "tree") - 0.2 * difficulty
             + 0.05 * (mode == "parallel") + rng.normal(0, 0.2, n))
    return pd.DataFrame({"tokens_total": tokens, "topology": topo, "mode": mode,
                         "difficulty": difficulty, "score": score, "suite": "s"})


def _brute_force_lmg(df: pd.DataFrame, terms: dict[str, str]) -> dict[str, float]:
    """R² parts by averaging each group's increment over every entry order (statsmodels OLS)."""
    data = df.assign(log_tokens=np.log2(1 + df["tokens_total"]))
    r2: dict[frozenset[str], float] = {frozenset(): 0.0}
    for k in range(1, len(terms) + 1):
        for subset in itertools.combinations(terms, k):
            rhs = " + ".join(terms[g] for g in subset)
            r2[frozenset(subset)] = smf.ols(f"score ~ {rhs}", data).fit().rsquared
    parts = dict.fromkeys(terms, 0.0)
    orders = list(itertools.permutations(terms))
    for order in orders:
        seen: frozenset[str] = frozenset()
        for g in order:
            parts[g] += (r2[seen | {g}] - r2[seen]) / len(orders)
            seen = seen | {g}
    return parts


def test_lmg_equals_brute_force_shapley_over_statsmodels_r2() -> None:
    df = _mixed()
    got = attribute(df, outcome="score", coordination=("topology", "mode"),
                    controls=("difficulty",), n_boot=0)
    want = _brute_force_lmg(df, {"spend": "log_tokens", "topology": "C(topology)",
                                 "mode": "C(mode)", "controls": "difficulty"})
    full = smf.ols("score ~ np.log2(1 + tokens_total) + C(topology) + C(mode) + difficulty",
                   df).fit().rsquared
    assert got.r2.estimate == pytest.approx(full, abs=1e-10)
    for group, part in want.items():
        assert got.r2_parts[group].estimate == pytest.approx(part, abs=1e-10)
        assert got.shares[group].estimate == pytest.approx(part / full, abs=1e-9)
    assert math.isnan(got.r2.low) and got.n_boot == 0


def test_shares_sum_to_one_and_parts_to_r2() -> None:
    a = attribute(_mixed(), outcome="score", coordination=("topology", "mode"), n_boot=200)
    assert sum(s.estimate for s in a.shares.values()) == pytest.approx(1.0)
    assert sum(p.estimate for p in a.r2_parts.values()) == pytest.approx(a.r2.estimate)
    for s in a.shares.values():
        assert s.low <= s.estimate <= s.high
    assert a.groups["spend"] == ("log_tokens",)
    assert a.groups["mode"] == ("mode=parallel", "mode=refine", "mode=single", "mode=tree")


def test_shapley_of_additive_and_symmetric_games() -> None:
    # v(S) = sum of its members' worth: Shapley values are the worths.
    worth = np.array([0.1, 0.3, 0.05])
    v = np.array([[sum(worth[j] for j in range(3) if m >> j & 1) for m in range(8)]])
    assert shapley(v)[0] == pytest.approx(worth)
    # Two perfect substitutes share what either brings alone.
    assert shapley(np.array([0.0, 0.4, 0.4, 0.4]))[...] == pytest.approx([0.2, 0.2])


def _sim(seed: int = 0, **kw: object) -> pd.DataFrame:
    effects = LatentEffects(token_effect=0.1, topology_effects={"tree": 0.1, "single": -0.1},
                            difficulty_effect=-0.2, reference_tokens=2000)
    return latent_runs(effects, topologies=["single", "best_of_n", "refine", "tree"],
                       budgets=[1000, 4000], seeds=(0, 1), tasks_per_cell=60, seed=seed,
                       **kw)  # type: ignore[arg-type]


def test_mode_equal_to_topology_is_merged_and_said_so() -> None:
    a = attribute(_sim(), n_boot=50)
    assert set(a.shares) == {"spend", "topology"}
    assert set(a.skipped) == {"roles_present", "mode"}
    assert "collinear with 'topology'" in a.skipped["mode"]
    assert a.simulated


def test_single_level_variable_is_skipped_and_controls_are_one_group() -> None:
    df = _sim()
    a = attribute(df, coordination=("topology", "suite"), controls=("difficulty", "seed"),
                  n_boot=50)
    assert a.skipped["suite"].startswith("single level")
    assert a.groups["controls"] == ("difficulty", "seed")


def test_partly_collinear_mode_keeps_only_what_it_adds() -> None:
    df = _sim()
    adaptive = df["topology"] == "tree"
    df.loc[adaptive, "mode"] = np.where(df.loc[adaptive, "seed"] == 0, "beam", "mcts")
    a = attribute(df, coordination=("topology", "mode"), n_boot=0)
    assert a.groups["mode"] == ("mode=mcts",)  # the other levels are the topologies again


def test_bootstrap_is_reproducible_and_seeded() -> None:
    df = _sim()
    one = attribute(df, n_boot=300, seed=7)
    assert attribute(df, n_boot=300, seed=7) == one
    other = attribute(df, n_boot=300, seed=8)
    assert other.shares["spend"].estimate == one.shares["spend"].estimate
    assert other.shares["spend"].low != one.shares["spend"].low


def test_cluster_bootstrap_resamples_tasks() -> None:
    df = _sim()
    a = attribute(df, n_boot=300, cluster="task_id", seed=1)
    assert a == attribute(df, n_boot=300, cluster="task_id", seed=1)
    point = attribute(df, n_boot=0).shares["spend"].estimate
    assert a.shares["spend"].estimate == pytest.approx(point)
    assert a.shares["spend"].low < a.shares["spend"].estimate < a.shares["spend"].high


def test_rows_without_outcome_are_left_out_and_flag_follows_rows() -> None:
    df = _sim().astype({"correct": object})
    df.loc[:99, "correct"] = None
    df["simulated"] = False
    a = attribute(df, n_boot=0)
    assert a.n == len(df) - 100
    assert isinstance(a, Attribution) and not a.simulated


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (lambda d: d.iloc[0:0], {}, "empty"),
        (lambda d: d.drop(columns="roles_present"), {}, "'roles_present' is missing"),
        (lambda d: d, {"controls": ("budget_cell",)}, "'budget_cell' is missing"),
        (lambda d: d, {"cluster": "nope"}, "'nope' is missing"),
        (lambda d: d.assign(correct=True), {}, "no variance"),
        (lambda d: d.assign(correct=None), {}, "no run has a value"),
        (lambda d: d.assign(correct="yes"), {}, "boolean or numeric"),
        (lambda d: d, {"controls": ("topology",)}, "may appear once"),
        (lambda d: d, {"n_boot": -1}, "n_boot"),
        (lambda d: d, {"spend": (), "coordination": ("suite",)}, "nothing left"),
        (lambda d: d.assign(tokens_total=-d["tokens_total"]), {}, "negative"),
    ],
)
def test_clear_errors(change: object, kwargs: dict[str, object], message: str) -> None:
    df = change(_sim())  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        attribute(df, **kwargs)  # type: ignore[arg-type]


def test_not_a_dataframe() -> None:
    with pytest.raises(ConfigError, match="DataFrame"):
        attribute([{"correct": True}])


def test_too_many_dummy_columns_is_a_config_error() -> None:
    df = _sim()
    with pytest.raises(ConfigError, match="too many levels"):
        attribute(df, controls=("task_id",), n_boot=0)
