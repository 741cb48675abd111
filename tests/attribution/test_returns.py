"""Marginal returns per role: the regression, the skipped roles, the errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from stratagem.attribution import RoleReturn, marginal_returns
from stratagem.errors import ConfigError
from stratagem.simulate import LatentEffects, latent_runs


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    effects = LatentEffects(token_effect=0.1, topology_effects={"tree": 0.1})
    return latent_runs(effects, topologies=["single", "plan_solve", "tree"],
                       budgets=[1000, 4000], seeds=(0,), tasks_per_cell=100, seed=9)


def test_slopes_are_ols_with_topology_fixed_effects(runs: pd.DataFrame) -> None:
    got = marginal_returns(runs, n_boot=200)
    assert [r.role for r in got] == ["planner", "solver", "judge"]  # no decomposer spend
    data = runs.assign(y=runs["correct"].astype(float),
                       **{f"{r}_k": runs[f"tokens_{r}"] / 1000 for r in ("planner", "solver",
                                                                        "judge")})
    fit = smf.ols("y ~ planner_k + solver_k + judge_k + C(topology)", data).fit()
    for r in got:
        assert isinstance(r, RoleReturn)
        assert r.per_1k.estimate == pytest.approx(fit.params[f"{r.role}_k"], abs=1e-9)
        assert r.per_1k.low < r.per_1k.estimate < r.per_1k.high
        assert r.mean_tokens == pytest.approx(runs[f"tokens_{r.role}"].mean())
    assert marginal_returns(runs, n_boot=200) == got  # seeded


def test_role_fixed_by_topology_is_left_out(runs: pd.DataFrame) -> None:
    df = runs.assign(tokens_planner=np.where(runs["topology"] == "plan_solve", 300, 0))
    assert [r.role for r in marginal_returns(df, n_boot=0)] == ["solver", "judge"]


def test_marginal_return_errors(runs: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="'tokens_critic' is missing"):
        marginal_returns(runs, roles=("critic",))
    with pytest.raises(ConfigError, match="no role"):
        marginal_returns(runs, roles=("decomposer",))
    with pytest.raises(ConfigError, match="no variance"):
        marginal_returns(runs.assign(correct=False))
    with pytest.raises(ConfigError, match="n_boot"):
        marginal_returns(runs, n_boot=-5)
