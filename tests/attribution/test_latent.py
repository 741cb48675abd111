"""The latent-skill generator: RunRecord-shaped, seeded, consistent, with known truth."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from stratagem.errors import ConfigError
from stratagem.graphs import DEFAULT_SPLITS
from stratagem.records import ROLE_COLUMNS, RunRecord
from stratagem.simulate import LatentEffects, latent_runs, planted_shares

TOPOLOGIES = ["single", "plan_solve", "decompose_solve", "best_of_n", "adaptive"]
EFFECTS = LatentEffects(token_effect=0.08, topology_effects={"adaptive": 0.1, "single": -0.1},
                        difficulty_effect=-0.2, reference_tokens=2000)


def test_rows_are_run_records_in_field_order() -> None:
    df = latent_runs(EFFECTS, topologies=TOPOLOGIES, budgets=[1000, 4000], seeds=(0, 1),
                     tasks_per_cell=7, seed=0)
    assert len(df) == 5 * 2 * 2 * 7
    assert list(df.columns) == [f for f in RunRecord.model_fields if f != "role_tokens"]
    for row in df.sample(20, random_state=0).to_dict("records"):
        record = RunRecord(**row)
        assert record.simulated and record.backend == "simulated"
        assert record.mode == record.topology
        assert record.cell == f"{record.topology}|{record.budget}|uniform"
    assert df["run_id"].is_unique
    # The simulator's roles are exactly the records' role columns.
    LatentEffects(role_effects=dict.fromkeys(ROLE_COLUMNS, 0.1))
    with pytest.raises(ConfigError, match=re.escape(str(list(ROLE_COLUMNS)))):
        LatentEffects(role_effects={"critic": 0.1})


def test_tokens_add_up_and_follow_the_topology_split() -> None:
    df = latent_runs(EFFECTS, topologies=TOPOLOGIES, budgets=[1000, 4000], seeds=(0,),
                     tasks_per_cell=200, seed=1)
    roles = df[[f"tokens_{r}" for r in ROLE_COLUMNS]]
    assert (roles.sum(axis=1) == df["tokens_total"]).all()
    assert (df["accepted_tokens"] + df["waste_tokens"] == df["tokens_total"]).all()
    assert (df["prompt_tokens"] + df["completion_tokens"] == df["tokens_total"]).all()
    for topo, split in DEFAULT_SPLITS.items():
        sub = df[df.topology == topo]
        if sub.empty:
            continue
        for role in ROLE_COLUMNS:
            share = (sub[f"tokens_{role}"] / sub["tokens_total"]).mean()
            assert share == pytest.approx(split.get(role, 0.0), abs=0.02)
        present = "+".join(r for r in ROLE_COLUMNS if split.get(r, 0) > 0)
        assert set(sub["roles_present"]) == {present}
    median_ratio = (df["tokens_total"] / df["budget"]).median()
    assert median_ratio == pytest.approx(1.0, abs=0.03)  # the median run hits its target


def test_success_follows_the_latent_probability() -> None:
    df = latent_runs(EFFECTS, topologies=TOPOLOGIES, budgets=[500, 2000, 8000], seeds=(0,),
                     tasks_per_cell=400, seed=2, include_latent=True)
    eta = (0.08 * np.log2(df["tokens_total"] / 2000)
           + df["topology"].map({"adaptive": 0.1, "single": -0.1}).fillna(0.0)
           - 0.2 * (df["difficulty"] - 0.5))
    assert np.allclose(df["latent_p"], np.clip(0.5 + eta, 0.01, 0.99))
    assert df["correct"].mean() == pytest.approx(df["latent_p"].mean(), abs=0.02)
    hard = df["difficulty"] > 0.5
    assert df.loc[hard, "correct"].mean() < df.loc[~hard, "correct"].mean()


def test_logit_link_and_reference_point() -> None:
    effects = LatentEffects(base=0.3, token_effect=1.0, link="logit", noise=0.0,
                            reference_tokens=1000)
    df = latent_runs(effects, topologies=["single"], budgets=[1000, 2000], seeds=(0,),
                     tasks_per_cell=3, seed=0, include_latent=True)
    at_ref = df.loc[df.budget == 1000, "latent_p"]
    assert np.allclose(at_ref, 0.3)  # base is a probability under both links
    odds = 0.3 / 0.7 * math.e
    assert np.allclose(df.loc[df.budget == 2000, "latent_p"], odds / (1 + odds))


def test_seeded() -> None:
    kw = {"topologies": TOPOLOGIES, "budgets": [1000, 2000, 4000, 8000], "seeds": (0, 1),
          "tasks_per_cell": 100}
    a = latent_runs(EFFECTS, seed=3, **kw)  # type: ignore[arg-type]
    assert len(a) == 4000
    assert a.equals(latent_runs(EFFECTS, seed=3, **kw))  # type: ignore[arg-type]
    assert not a["correct"].equals(latent_runs(EFFECTS, seed=4, **kw)["correct"])  # type: ignore[arg-type]


def test_closed_form_shares_match_the_numeric_ones() -> None:
    budgets = [1000, 2000, 8000]
    closed = planted_shares(EFFECTS, topologies=TOPOLOGIES, budgets=budgets, controls=True)
    numeric = planted_shares(EFFECTS, topologies=TOPOLOGIES, budgets=budgets, controls=True,
                             method="numeric")
    assert set(closed) == {"spend", "topology", "controls"}
    assert sum(closed.values()) == pytest.approx(1.0)
    for group, share in closed.items():
        assert numeric[group] == pytest.approx(share, abs=0.005)
    # By hand: spend 0.08² (Var log2 budget + (0.3/ln 2)²), topology Var{0.1, -0.1, 0, 0, 0}.
    spend = 0.08**2 * (np.var(np.log2(budgets)) + (0.3 / math.log(2)) ** 2)
    topo = np.var([0.1, -0.1, 0, 0, 0])
    ctrl = 0.2**2 / 12
    assert closed["spend"] == pytest.approx(spend / (spend + topo + ctrl))


def test_numeric_shares_for_nonlinear_truths() -> None:
    logit = LatentEffects(token_effect=0.5, link="logit", topology_effects={"tree": 1.0})
    shares = planted_shares(logit, topologies=["single", "tree"], budgets=[1000, 4000])
    assert set(shares) == {"spend", "topology"} and sum(shares.values()) == pytest.approx(1)
    with pytest.raises(ConfigError, match="closed form"):
        planted_shares(logit, topologies=["single"], budgets=[1000], method="closed")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": 1.0}, "base"),
        ({"noise": -0.1}, "noise"),
        ({"link": "probit"}, "link"),
        ({"reference_tokens": 0}, "reference_tokens"),
        ({"role_effects": {"critic": 0.1}}, "unknown roles"),
    ],
)
def test_effects_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LatentEffects(**kwargs)  # type: ignore[arg-type]


def test_grid_is_validated() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        latent_runs(EFFECTS, topologies=[], budgets=[1000])
    with pytest.raises(ConfigError, match="budgets must be >= 1"):
        latent_runs(EFFECTS, topologies=["single"], budgets=[0])
    with pytest.raises(ConfigError, match="no positive share"):
        latent_runs(EFFECTS, topologies=["x"], budgets=[10], role_splits={"x": {"critic": 1}})
