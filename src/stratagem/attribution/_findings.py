"""A claim's finding: the effect with its 95% interval, n, a verdict, and the n that decides.

The statistics (tested against scipy/statsmodels reference values):

* **Paired effect.** Each treatment run is paired with the control run of the same task and
  seed (and every grid variable neither side selects: :meth:`Claim.pair_keys`). With
  ``d_i = success_t - success_c`` over the ``n`` pairs, the effect is ``mean(d)`` and its 95%
  interval the paired t interval ``mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)`` (``sd``
  with ``n - 1`` in the denominator), the interval of :func:`scipy.stats.ttest_rel`. When
  every pair differs by the same amount (``sd = 0``, e.g. both sides right on the same tasks)
  that interval has no width, which n pairs cannot justify: the interval is then
  ``mean(d) +- (1 - 0.025^(1/n))``, the exact (Clopper-Pearson) 97.5% upper bound on the share
  of pairs that could still disagree when none of the n did (clipped to [-1, 1]).
* **Verdict.** ``better``: supported if the interval is above 0, contradicted if below,
  inconclusive otherwise. ``equivalent``: supported if the interval lies inside
  ``[-margin, margin]`` (two one-sided tests at 2.5% each), contradicted if it lies wholly
  outside, inconclusive otherwise. ``spend_share``: the attribution's spend share with its
  bootstrap interval against ``threshold``, the same way as ``better``.
* **The n that would decide an inconclusive claim** (80% power, alpha 0.05): for ``better``,
  the pairs ``n`` at which a two-sided paired t test detects the observed ``mean(d)`` given the
  observed ``sd(d)``: the solution of the noncentral-t power equation
  (:class:`statsmodels.stats.power.TTestPower`), about ``((z_{0.975} + z_{0.8}) * sd / d)^2
  = 7.85 * (sd / d)^2``. For ``equivalent`` with ``|d| < margin``,
  ``((z_{0.975} + z_{0.9}) * sd / (margin - |d|))^2`` (each one-sided test at 90% power); with
  ``|d| >= margin``, the ``better`` formula with ``|d| - margin`` in place of ``d``. For
  ``spend_share``, ``n * (half_width / |share - threshold|)^2`` runs (an interval narrows as
  ``1/sqrt(n)``). For ``equivalent`` when every pair agreed (``sd = 0``), the n at which
  the exact bound ``1 - 0.025^(1/n)`` falls inside ``margin - |d|``. Pairs are turned into
  tasks by the pairs per task of this design (seeds x cells). Otherwise no effect observed
  (``d = 0``) decides at no n: ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from scipy import stats  # type: ignore[import-untyped, unused-ignore]
from statsmodels.stats.power import TTestPower  # type: ignore[import-untyped, unused-ignore]

from stratagem.attribution._claims import Claim, Selector
from stratagem.attribution._types import Attribution, Interval
from stratagem.errors import ConfigError

__all__ = ["Finding", "PairedEffect", "claim_finding", "paired_effect", "pairs_to_decide"]

Verdict = Literal["supported", "contradicted", "inconclusive"]
_ALPHA, _POWER = 0.05, 0.8


@dataclass(frozen=True, slots=True)
class PairedEffect:
    """The mean of paired differences with its 95% t interval.

    Attributes:
        estimate: ``mean(d)``.
        low: Lower end of the 95% interval (NaN below 2 pairs).
        high: Upper end.
        sd: Sample standard deviation of ``d`` (NaN below 2 pairs).
        n: Pairs.
    """

    estimate: float
    low: float
    high: float
    sd: float
    n: int


def paired_effect(treatment: Sequence[float], control: Sequence[float]) -> PairedEffect:
    """``mean(treatment - control)`` with its paired 95% t interval (see the module docstring).

    Example:
        >>> e = paired_effect([1, 1, 1, 0], [0, 1, 0, 0])
        >>> round(e.estimate, 3), round(e.sd, 3), e.n
        (0.5, 0.577, 4)

    Raises:
        ConfigError: If the two sides differ in length or are empty.
    """
    t, c = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if t.shape != c.shape or t.size == 0:
        raise ConfigError(f"paired_effect needs two equally long, non-empty sides, got "
                          f"{t.size} and {c.size}")
    d = t - c
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return PairedEffect(mean, math.nan, math.nan, math.nan, n)
    sd = float(d.std(ddof=1))
    if sd == 0:
        half = 1 - (_ALPHA / 2) ** (1 / n)
        return PairedEffect(mean, max(-1.0, mean - half), min(1.0, mean + half), sd, n)
    half = float(stats.t.ppf(1 - _ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    return PairedEffect(mean, mean - half, mean + half, sd, n)


def pairs_to_decide(effect: float, sd: float, *, margin: float | None = None) -> int | None:
    """Pairs that would decide a claim at 80% power and alpha 0.05 (module docstring).

    ``margin=None``: a difference claim; otherwise an equivalence claim within ``+-margin``.
    ``None`` when no n decides it (no effect observed, or no variance to scale from).

    Example:
        >>> pairs_to_decide(0.1, 0.5)
        199
    """
    if margin is not None and sd == 0 and abs(effect) < margin:
        # Every pair agreed: the exact bound (module docstring) must shrink inside the margin.
        return max(2, math.ceil(math.log(_ALPHA / 2) / math.log(1 - (margin - abs(effect)))))
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd <= 0:
        return None
    if margin is not None and abs(effect) < margin:
        z = stats.norm.ppf(1 - _ALPHA / 2) + stats.norm.ppf(1 - (1 - _POWER) / 2)
        return max(2, math.ceil(float((z * sd / (margin - abs(effect))) ** 2)))
    gap = abs(effect) if margin is None else abs(effect) - margin
    if gap <= 0:
        return None
    n = TTestPower().solve_power(effect_size=gap / sd, alpha=_ALPHA, power=_POWER,
                                 alternative="two-sided")
    return max(2, math.ceil(float(np.asarray(n).item())))


@dataclass(frozen=True, slots=True)
class Finding:
    """What an ablation says about one claim.

    Attributes:
        claim: The claim.
        effect: Treatment minus control success rate (paired), or the spend share, with its
            95% interval.
        n: Pairs compared (runs analysed for ``spend_share``).
        verdict: ``supported``, ``contradicted`` or ``inconclusive``.
        tasks_needed: For an inconclusive claim, the tasks (at this design's seeds and cells
            per task) that would decide it at 80% power; ``None`` otherwise or when no n would.
        treatment_rate: The treatment side's success rate over the pairs.
        control_rate: The control side's.
        excluded: Pairs left out because their candidates differed (``same_candidates``).
        simulated: Whether the runs came from the simulated backend.
    """

    claim: Claim
    effect: Interval
    n: int
    verdict: Verdict
    tasks_needed: int | None = None
    treatment_rate: float = math.nan
    control_rate: float = math.nan
    excluded: int = 0
    simulated: bool = False

    @property
    def verdict_text(self) -> str:
        """The verdict in words."""
        return "inconclusive at this n" if self.verdict == "inconclusive" else self.verdict


def _side(df: pd.DataFrame, sel: Selector) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for f in sel.fields():
        value = getattr(sel, f)
        mask &= (df[f] == value) if f == "budget" else (df[f].astype(str) == str(value))
    return df[mask]


def _verdict(low: float, high: float, *, above: float = 0.0,
             margin: float | None = None) -> Verdict:
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if margin is not None:
        if -margin <= low and high <= margin:
            return "supported"
        if low > margin or high < -margin:
            return "contradicted"
        return "inconclusive"
    if low > above:
        return "supported"
    if high < above:
        return "contradicted"
    return "inconclusive"


def claim_finding(df: pd.DataFrame, claim: Claim,
                  attribution: Attribution | None = None) -> Finding:
    """The finding of ``claim`` on the run table ``df`` (and, for ``spend_share``, the
    attribution computed from it).

    Raises:
        ConfigError: If a side selects no run, no run pairs, or a ``spend_share`` claim has
            no attribution (the message names the claim and what is missing).
    """
    simulated = bool("simulated" in df.columns and len(df) and df["simulated"].all())
    if claim.kind == "spend_share":
        return _share_finding(claim, attribution, simulated)
    assert claim.compare is not None  # the model's validator
    scored = df[df["correct"].notna()]
    sides = {}
    for name, sel in (("treatment", claim.compare.treatment), ("control", claim.compare.control)):
        side = _side(scored, sel)
        if side.empty:
            shown = ", ".join(f"{f} = {getattr(sel, f)!r}" for f in sel.fields())
            have = sorted({str(v) for f in sel.fields() for v in scored[f].unique()})
            raise ConfigError(f"claim {claim.id}: {name} ({shown}) selects no run; the "
                              f"results have {', '.join(have)}: fix claim.compare.{name}")
        sides[name] = side
    keys = list(claim.pair_keys())
    cols = [*keys, "correct", *(["candidates"] if "candidates" in df.columns else [])]
    merged = sides["treatment"][cols].merge(sides["control"][cols], on=keys,
                                            suffixes=("_t", "_c"))
    excluded = 0
    if claim.same_candidates:
        if "candidates" not in df.columns:
            raise ConfigError(f"claim {claim.id}: same_candidates needs the runs' candidate "
                              "digests, which these results lack: rerun with this stratagem")
        same = (merged["candidates_t"] == merged["candidates_c"]) & (merged["candidates_t"] != "")
        excluded = int((~same).sum())
        merged = merged[same]
    if merged.empty:
        raise ConfigError(f"claim {claim.id}: no treatment run pairs with a control run on "
                          f"{', '.join(keys)}" + (f" ({excluded} pairs had different "
                                                  "candidates)" if excluded else ""))
    t = merged["correct_t"].astype(float).to_numpy()
    c = merged["correct_c"].astype(float).to_numpy()
    eff = paired_effect(t, c)
    verdict = _verdict(eff.low, eff.high, margin=claim.margin)
    needed = None
    if verdict == "inconclusive":
        pairs = pairs_to_decide(eff.estimate, eff.sd, margin=claim.margin)
        if pairs is not None:
            per_task = len(merged) / merged[["suite", "task_id"]].drop_duplicates().shape[0]
            needed = math.ceil(pairs / per_task)
    return Finding(claim, Interval(eff.estimate, eff.low, eff.high), eff.n, verdict, needed,
                   float(t.mean()), float(c.mean()), excluded, simulated)


def _share_finding(claim: Claim, attribution: Attribution | None, simulated: bool) -> Finding:
    assert claim.threshold is not None  # the model's validator
    if attribution is None or "spend" not in attribution.shares:
        raise ConfigError(f"claim {claim.id}: spend_share needs the attribution, which could "
                          "not be computed (see the report's notes)")
    share = attribution.shares["spend"]
    verdict = _verdict(share.low, share.high, above=claim.threshold)
    needed = None
    gap = abs(share.estimate - claim.threshold)
    if verdict == "inconclusive" and gap > 0 and share.high > share.low:
        half = (share.high - share.low) / 2
        needed = math.ceil(attribution.n * (half / gap) ** 2)
    return Finding(claim, share, attribution.n, verdict, needed,
                   simulated=simulated or attribution.simulated)
