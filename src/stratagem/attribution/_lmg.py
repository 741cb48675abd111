"""How much of the variance in success is token spend, and how much coordination: LMG shares.

The model is ordinary least squares of the outcome on groups of columns: ``spend``
(``log2(1 + tokens_total)`` by default), one group per coordination variable (dummies) and
optionally ``controls``. For a binary outcome this is a *linear probability model*. That is
deliberate: R² of OLS is a share of variance with an exact decomposition, so "how much of
the variance each group explains" has one meaning; pseudo-R² of a logit have several
incompatible definitions and none decomposes additively. The slopes of a linear probability
model can leave [0, 1] at the edges, but the variance decomposition does not depend on that.

LMG (Lindeman, Merenda and Gold, 1980) is the Shapley value of R² over the groups: each
group's contribution averaged over every order in which the groups could enter the model.
With ``k`` groups it needs R² for all ``2**k`` subsets, which is cheap for the handful of
groups here. The values add up to the full model's R²; divided by it, they are the shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import factorial

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem.attribution._boot import cluster_codes, interval, moments
from stratagem.attribution._design import (
    Block,
    FloatArray,
    build_design,
    categorical_block,
    check_variance,
    is_numeric,
    outcome_values,
    require_table,
    spend_block,
    spend_sources,
)
from stratagem.attribution._types import Attribution
from stratagem.errors import ConfigError

__all__ = ["attribute", "shapley"]

_WHAT = "attribute()"
_MAX_GROUPS = 12
"""Exact Shapley values need 2**k regressions per resample; past this, group variables."""


def attribute(
    df: pd.DataFrame,
    *,
    outcome: str = "correct",
    spend: Sequence[str] = ("log_tokens",),
    coordination: Sequence[str] = ("topology", "roles_present", "mode"),
    controls: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str | None = None,
) -> Attribution:
    """Split the variance in success between token spend and coordination (LMG R² shares).

    Groups, in this order: ``spend`` (all ``spend`` terms), one group per ``coordination``
    variable, and ``controls`` (all of them, one group). Text columns become dummies (first
    level in sorted order dropped); numeric ones enter as they are. A group that adds nothing
    to the groups before it, such as a single-level variable or ``mode`` when it always
    equals the topology, gets no share: :attr:`Attribution.skipped` says why.

    Rows without an outcome (``correct=None``: no checker) are left out, as are rows missing
    a numeric predictor (e.g. ``difficulty`` among the controls); :attr:`Attribution.n`
    counts the rows analysed.

    Intervals are percentile 95% intervals over ``n_boot`` resamples of runs drawn with
    replacement, or of whole clusters of runs (``cluster="task_id"`` resamples tasks, which
    respects the correlation between runs of the same task).

    Args:
        df: Run records, one row per run (the fields of ``RunRecord`` as columns).
        outcome: The success column (boolean or numeric).
        spend: Spend terms: ``log_tokens`` is ``log2(1 + tokens_total)``, ``log_<column>`` is
            ``log2(1 + <column>)``, any other name a numeric column as it is.
        coordination: Coordination variables, one group each.
        controls: Variables such as ``difficulty`` or ``suite``, together one group.
        n_boot: Bootstrap resamples (0: no intervals, the bounds are NaN).
        seed: Seeds the resampling.
        cluster: Resample whole groups of runs sharing this column's value.

    Returns:
        R², each group's share of it and its absolute part, with intervals.

    Raises:
        ConfigError: An empty table, a missing column (named), an outcome with no variance,
            a variable named twice, or nothing left to attribute.
    """
    if n_boot < 0:
        raise ConfigError(f"{_WHAT}: n_boot must be >= 0, got {n_boot}")
    names = ["spend", *coordination, "controls"] if spend else [*coordination, "controls"]
    used = [*spend_sources(spend), *coordination, *controls]
    if len(set(used)) != len(used) or "spend" in coordination or "controls" in coordination:
        raise ConfigError(f"{_WHAT}: each variable may appear once among spend, coordination "
                          f"and controls, got {used}")
    require_table(df, [outcome, *used, *([cluster] if cluster else [])], what=_WHAT)

    y_all, known = outcome_values(df, outcome, what=_WHAT)
    numeric = [c for c in used if is_numeric(df[c])]
    complete = known & df[numeric].notna().all(axis=1).to_numpy(dtype=bool)
    data = df.loc[complete].reset_index(drop=True)
    y = y_all[complete[known]]
    check_variance(y, outcome, what=_WHAT)

    blocks: list[Block] = []
    if spend:
        blocks.append(spend_block(data, spend, what=_WHAT))
    blocks.extend(categorical_block(data, c, [c]) for c in coordination)
    if controls:
        blocks.append(categorical_block(data, "controls", controls))
    design = build_design(data, blocks)
    k = len(design.blocks)
    if k == 0:
        raise ConfigError(f"{_WHAT}: nothing left to attribute; every group was skipped: "
                          f"{design.skipped}")
    if k > _MAX_GROUPS:
        raise ConfigError(f"{_WHAT}: {k} groups need 2**{k} regressions each; use at most "
                          f"{_MAX_GROUPS}, e.g. by moving variables into controls")

    codes, n_clusters = cluster_codes(data, cluster, what=_WHAT)
    mom = moments(design.matrix, y, codes, n_clusters, n_boot=n_boot, seed=seed,
                  what=_WHAT)
    slices = design.slices
    subset_r2 = np.column_stack([
        mom.r2(np.concatenate([slices[j] for j in range(k) if mask >> j & 1] or
                              [np.empty(0, dtype=np.intp)]))
        for mask in range(1 << k)
    ])  # (1 + n_boot, 2**k)
    parts = shapley(subset_r2)
    full = subset_r2[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = parts / full[:, None]

    order = [b.name for b in design.blocks]
    return Attribution(
        r2=interval(full[0], full[1:]),
        shares={g: interval(shares[0, j], shares[1:, j]) for j, g in enumerate(order)},
        r2_parts={g: interval(parts[0, j], parts[1:, j]) for j, g in enumerate(order)},
        n=len(y),
        n_boot=n_boot,
        groups={b.name: b.columns for b in design.blocks},
        simulated=_any_simulated(df),
        skipped={g: design.skipped[g] for g in names if g in design.skipped},
    )


def shapley(subset_values: FloatArray) -> FloatArray:
    """Shapley values from a value for every subset of ``k`` players.

    Args:
        subset_values: ``(..., 2**k)``; column ``mask`` is the value of the players whose
            bits are set in ``mask`` (column 0, the empty set, is taken as 0).

    Returns:
        ``(..., k)`` Shapley values; they add up to the value of the full set.
    """
    n_sub = subset_values.shape[-1]
    k = n_sub.bit_length() - 1
    if n_sub != 1 << k:
        raise ValueError(f"need 2**k subset values, got {n_sub}")
    v = subset_values - subset_values[..., :1]
    size = np.array([bin(m).count("1") for m in range(n_sub)])
    weight = np.array([factorial(s) * factorial(k - s - 1) / factorial(k) if s < k else 0.0
                       for s in range(k + 1)])
    out = np.zeros((*subset_values.shape[:-1], k))
    for j in range(k):
        without = np.array([m for m in range(n_sub) if not m >> j & 1])
        gain = v[..., without | (1 << j)] - v[..., without]
        out[..., j] = gain @ weight[size[without]]
    return out


def _any_simulated(df: pd.DataFrame) -> bool:
    if "simulated" not in df.columns:
        return False
    return bool(df["simulated"].fillna(False).astype(bool).any())
