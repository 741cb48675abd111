"""The Adaptive-Consistency rule: its posterior, and when it stops."""

from __future__ import annotations

import math

import pytest
from scipy.stats import beta

from stratagem.budgets import AdaptiveConsistency, Uniform, majority_probability
from stratagem.errors import ConfigError


@pytest.mark.parametrize(("votes", "expected"), [
    ([3], 1 - 0.5 ** 4), ([4], 1 - 0.5 ** 5), ([2, 2], 0.5), ([5, 1, 1], None), ([], 0.0)])
def test_the_beta_criterion_is_the_leaders_share_above_one_half(
        votes: list[int], expected: float | None) -> None:
    if expected is None:  # against scipy's Beta distribution directly
        expected = float(beta.sf(0.5, 5 + 1, 1 + 1))
    assert math.isclose(majority_probability(votes), expected, rel_tol=1e-9)


def test_more_agreement_means_more_confidence_under_both_criteria() -> None:
    for criterion in ("beta", "dirichlet"):
        ps = [majority_probability([k, 1], criterion) for k in range(1, 8)]
        assert ps == sorted(ps) and ps[-1] > 0.9 and ps[0] <= 0.5 + 1e-9
    # A third answer seen lowers the Dirichlet leader's chance; Beta only reads the top two.
    assert majority_probability([4, 1, 1], "dirichlet") < majority_probability([4, 1],
                                                                               "dirichlet")
    assert majority_probability([4, 1, 1]) == majority_probability([4, 1])
    assert majority_probability([4, 2], "dirichlet") == majority_probability([4, 2],
                                                                             "dirichlet")


def test_it_stops_at_the_threshold_or_the_cap_never_before_min_samples() -> None:
    rule = AdaptiveConsistency(threshold=0.95, max_samples=6, min_samples=2)
    assert not rule.decide(["a"] * 3).stop          # 0.9375 < 0.95
    done = rule.decide(["a"] * 4)
    assert done.stop and done.leader == "a" and done.samples == 4
    assert "0.969" in done.reason
    split = rule.decide(["a", "b", "a", "b", "a", "b"])
    assert split.stop and "max_samples" in split.reason and split.leader == "a"
    assert not AdaptiveConsistency(threshold=0.5, min_samples=2).decide(["a"]).stop


def test_unreadable_samples_are_no_votes() -> None:
    rule = AdaptiveConsistency(threshold=0.9, max_samples=10)
    d = rule.decide(["", "", "x", "x", "x"])
    assert d.stop and d.leader == "x" and d.samples == 5
    assert rule.decide(["", ""]).leader is None


def test_as_an_allocation_policy_it_splits_like_uniform() -> None:
    difficulties = [0.1, 0.9, None, 0.5]
    assert AdaptiveConsistency().allocate(difficulties, 1003) == \
        Uniform().allocate(difficulties, 1003)


@pytest.mark.parametrize("kw", [{"threshold": 0.4}, {"threshold": 1.0},
                                {"min_samples": 5, "max_samples": 4}, {"batch": 0},
                                {"criterion": "gamma"}])
def test_bad_parameters_are_config_errors(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"adaptive_consistency|criterion"):
        AdaptiveConsistency(**kw)  # type: ignore[arg-type]
