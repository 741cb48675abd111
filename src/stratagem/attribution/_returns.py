"""Marginal return per role: how much accuracy another 1,000 tokens buys in each role.

One linear probability model of success on every role's tokens (in thousands) together,
with topology fixed effects, so each slope compares runs of the *same* topology that gave
that role more or fewer tokens while the other roles' tokens are held fixed. The slopes are
average linear returns over the spend range in the data, not derivatives at a point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem.attribution._boot import cluster_codes, interval, moments
from stratagem.attribution._design import (
    Block,
    build_design,
    categorical_block,
    check_variance,
    outcome_values,
    require_table,
)
from stratagem.attribution._types import RoleReturn
from stratagem.errors import ConfigError

__all__ = ["marginal_returns"]

_WHAT = "marginal_returns()"


def marginal_returns(
    df: pd.DataFrame,
    roles: Sequence[str] = ("planner", "decomposer", "solver", "judge"),
    *,
    outcome: str = "correct",
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str | None = None,
) -> list[RoleReturn]:
    """Accuracy per extra 1,000 tokens given to each role, with bootstrap 95% intervals.

    Roles that never spent a token are left out, and so is a role whose tokens are fixed by
    the topology (no run-to-run variation within a topology leaves its slope unidentified).

    Args:
        df: Run records with ``topology``, the outcome and ``tokens_<role>`` columns.
        roles: Roles to estimate, in the order returned.
        outcome: The success column.
        n_boot: Bootstrap resamples (0: no intervals, the bounds are NaN).
        seed: Seeds the resampling.
        cluster: Resample whole groups of runs sharing this column's value (e.g. ``task_id``).

    Returns:
        One :class:`RoleReturn` per role with an identified slope.

    Raises:
        ConfigError: An empty table, a missing column, an outcome with no variance, or no
            role with spend.
    """
    if n_boot < 0:
        raise ConfigError(f"{_WHAT}: n_boot must be >= 0, got {n_boot}")
    token_cols = [f"tokens_{r}" for r in roles]
    require_table(df, [outcome, "topology", *token_cols], what=_WHAT)
    y_all, known = outcome_values(df, outcome, what=_WHAT)
    complete = known & df[token_cols].notna().all(axis=1).to_numpy(dtype=bool)
    data = df.loc[complete].reset_index(drop=True)
    y = y_all[complete[known]]
    check_variance(y, outcome, what=_WHAT)

    spent = [r for r, c in zip(roles, token_cols, strict=True) if float(data[c].abs().sum()) > 0]
    if not spent:
        raise ConfigError(f"{_WHAT}: no role among {list(roles)} spent any tokens")
    thousands = np.column_stack([data[f"tokens_{r}"].to_numpy(dtype=np.float64) / 1000.0
                                 for r in spent])
    fixed = categorical_block(data, "topology", ["topology"])
    role_blocks = [
        Block(r, (f"tokens_{r}",), (f"tokens_{r}_k",), thousands[:, [j]],
              {f"tokens_{r}": False})
        for j, r in enumerate(spent)
    ]
    design = build_design(data, [fixed, *role_blocks])
    kept = [b.name for b in design.blocks if b.name != "topology"]
    if not kept:
        raise ConfigError(f"{_WHAT}: no role's tokens vary within a topology: {design.skipped}")

    codes, n_clusters = cluster_codes(data, cluster, what=_WHAT)
    slopes = moments(
        design.matrix, y, codes, n_clusters, n_boot=n_boot, seed=seed, what=_WHAT
    ).slopes()
    n_fixed = len(design.blocks[0].columns) if design.blocks[0].name == "topology" else 0
    out: list[RoleReturn] = []
    for j, role in enumerate(kept):
        col = slopes[:, n_fixed + j]
        out.append(RoleReturn(
            role=role,
            per_1k=interval(col[0], col[1:]),
            mean_tokens=float(data[f"tokens_{role}"].mean()),
        ))
    return out
