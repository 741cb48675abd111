"""The statistics behind a claim's finding, against scipy/statsmodels and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from stratagem.attribution import (
    Attribution,
    Claim,
    Interval,
    claim_finding,
    paired_effect,
    pairs_to_decide,
)
from stratagem.errors import ConfigError


def test_a_hand_computed_paired_example() -> None:
    # d = [1, 0, 1, 0]: mean 0.5, sd = sqrt(((.5^2) * 4) / 3) = 0.57735; t(0.975, 3) = 3.18245
    e = paired_effect([1, 1, 1, 0], [0, 1, 0, 0])
    assert e.n == 4
    assert e.estimate == pytest.approx(0.5)
    assert e.sd == pytest.approx(math.sqrt(1 / 3))
    half = 3.182446305284263 * math.sqrt(1 / 3) / 2
    assert (e.low, e.high) == pytest.approx((0.5 - half, 0.5 + half))


def test_the_interval_is_scipys_paired_t_interval() -> None:
    rng = np.random.default_rng(3)
    t = (rng.random(57) < 0.6).astype(float)
    c = (rng.random(57) < 0.4).astype(float)
    ref = stats.ttest_rel(t, c).confidence_interval(0.95)
    e = paired_effect(t, c)
    assert (e.low, e.high) == pytest.approx((ref.low, ref.high))
    assert e.estimate == pytest.approx(float(np.mean(t - c)))


def test_pairs_that_all_agree_get_the_exact_bound_not_a_zero_width_interval() -> None:
    e = paired_effect([1, 0, 0] * 14, [1, 0, 0] * 14)
    ref = stats.beta.ppf(0.975, 1, 42)  # Clopper-Pearson upper bound for 0 of 42
    assert e.sd == 0 and (e.low, e.high) == pytest.approx((-ref, ref))
    assert ref == pytest.approx(0.0841, abs=1e-4)
    assert paired_effect([1] * 10, [0] * 10).high == 1.0  # clipped


def test_one_pair_has_no_interval_and_unequal_sides_are_refused() -> None:
    e = paired_effect([1], [0])
    assert e.estimate == 1 and math.isnan(e.low) and math.isnan(e.high)
    with pytest.raises(ConfigError, match="equally long"):
        paired_effect([1, 0], [1])


def test_pairs_to_decide_is_statsmodels_power_and_close_to_the_normal_formula() -> None:
    n = pairs_to_decide(0.1, 0.5)
    ref = TTestPower().solve_power(effect_size=0.2, alpha=0.05, power=0.8)
    assert n == math.ceil(ref)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert abs(n - (z * 0.5 / 0.1) ** 2) < 3  # 196.2 by the normal approximation
    assert pairs_to_decide(0.0, 0.5) is None  # no effect: no n decides it
    assert pairs_to_decide(0.1, 0.0) is None


def test_pairs_to_decide_an_equivalence_uses_the_distance_to_the_margin() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.9)
    assert pairs_to_decide(0.02, 0.4, margin=0.1) == math.ceil((z * 0.4 / 0.08) ** 2)
    # Every pair agreed: the exact bound 1 - 0.025^(1/n) must fall below 0.1 (n >= 35.01).
    assert pairs_to_decide(0.0, 0.0, margin=0.1) == 36
    assert 1 - 0.025 ** (1 / 36) < 0.1 < 1 - 0.025 ** (1 / 35)
    # Beyond the margin: the difference from the margin must be shown instead.
    assert pairs_to_decide(0.15, 0.4, margin=0.1) == pairs_to_decide(0.05, 0.4)


def _claim(**kw: object) -> Claim:
    base: dict[str, object] = {
        "id": "x", "statement": "t beats c",
        "compare": {"treatment": {"topology": "t"}, "control": {"topology": "c"}}}
    return Claim.model_validate({**base, **kw})


def _runs(t: list[int], c: list[int], *, seeds: int = 1) -> pd.DataFrame:
    rows = []
    for s in range(seeds):
        for topo, outcomes in (("t", t), ("c", c)):
            for i, ok in enumerate(outcomes):
                rows.append({"suite": "arith", "task_id": f"arith/{i}", "seed": s,
                             "topology": topo, "policy": "uniform", "budget": 100,
                             "correct": bool(ok), "simulated": True,
                             "candidates": f"{i}-{s}"})
    return pd.DataFrame(rows)


def test_a_finding_pairs_by_task_and_seed_and_gives_a_verdict() -> None:
    df = _runs([1] * 30 + [0] * 10, [1] * 10 + [0] * 30)
    f = claim_finding(df, _claim())
    assert f.n == 40 and f.verdict == "supported"
    assert f.effect.estimate == pytest.approx(0.5)
    assert (f.treatment_rate, f.control_rate) == (0.75, 0.25)
    assert f.simulated and f.tasks_needed is None
    flipped = claim_finding(df, _claim(compare={"treatment": {"topology": "c"},
                                                "control": {"topology": "t"}}))
    assert flipped.verdict == "contradicted"


def test_an_inconclusive_finding_says_how_many_tasks_would_decide_it() -> None:
    # Two seeds: every task gives two pairs, so half as many tasks as pairs are needed.
    df = _runs([1, 0, 1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 0, 1, 0], seeds=2)
    f = claim_finding(df, _claim())
    assert f.verdict == "inconclusive" and f.verdict_text == "inconclusive at this n"
    d = np.tile(np.array([1, 0, 0, 0, 0, 1, -1, 0]), 2)
    pairs = pairs_to_decide(float(d.mean()), float(d.std(ddof=1)))
    assert pairs is not None and f.tasks_needed == math.ceil(pairs / 2)


def test_same_candidates_leaves_out_pairs_whose_candidates_differ() -> None:
    df = _runs([1] * 20, [0] * 20)
    df.loc[(df["topology"] == "c") & (df["task_id"].isin(["arith/0", "arith/1"])),
           "candidates"] = "other"
    f = claim_finding(df, _claim(same_candidates=True))
    assert (f.n, f.excluded) == (18, 2)
    assert claim_finding(df, _claim()).n == 20


def test_a_side_that_selects_nothing_is_named() -> None:
    df = _runs([1, 0], [0, 0])
    claim = _claim(compare={"treatment": {"topology": "tee"}, "control": {"topology": "c"}})
    with pytest.raises(ConfigError, match=r"claim x: treatment \(topology = 'tee'\) selects no "
                                          r"run; the results have c, t"):
        claim_finding(df, claim)


def test_equivalence_and_spend_share_verdicts() -> None:
    same = _runs([1, 0] * 100, [1, 0] * 100)
    assert claim_finding(same, _claim(kind="equivalent", margin=0.1)).verdict == "supported"
    apart = _runs([1] * 100, [0] * 100)
    assert claim_finding(apart, _claim(kind="equivalent", margin=0.1)).verdict == "contradicted"

    def attr(share: Interval) -> Attribution:
        return Attribution(r2=Interval(0.3, 0.2, 0.4), shares={"spend": share},
                           r2_parts={}, n=400, n_boot=100, groups={})

    share = Claim(id="f", statement="spend", kind="spend_share", threshold=0.5)
    assert claim_finding(same, share, attr(Interval(0.8, 0.7, 0.9))).verdict == "supported"
    assert claim_finding(same, share, attr(Interval(0.2, 0.1, 0.3))).verdict == "contradicted"
    wide = claim_finding(same, share, attr(Interval(0.625, 0.375, 0.875)))
    # The interval narrows as 1/sqrt(n): a half-width of 0.25 must become 0.125.
    assert wide.verdict == "inconclusive" and wide.tasks_needed == 1600
    with pytest.raises(ConfigError, match="needs the attribution"):
        claim_finding(same, share, None)


@pytest.mark.parametrize(("claim", "message"), [
    ({"kind": "spend_share"}, "needs threshold"),
    ({"kind": "equivalent"}, "needs margin"),
    ({"margin": 0.1}, "margin is for kind equivalent"),
    ({"compare": {"treatment": {"topology": "t"}, "control": {"policy": "u"}}},
     "treatment names topology but control names policy"),
    ({"compare": {"treatment": {"topology": "t"}, "control": {"topology": "t"}}},
     "select the same runs"),
    ({"compare": {"treatment": {}, "control": {}}}, "treatment selects nothing"),
])
def test_a_claim_that_cannot_be_decided_is_refused(claim: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _claim(**claim)
