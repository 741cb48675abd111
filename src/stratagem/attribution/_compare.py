"""Topologies compared at matched compute: within each budget cell, never across cells.

Pooling all runs of a topology would reward whichever topology was run at larger budgets
(or overspends its target); comparing inside a cell holds the target fixed, and the
achieved mean tokens next to the target show how well each topology kept to it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from statsmodels.stats.proportion import proportion_confint

from stratagem.attribution._design import outcome_values, require_table
from stratagem.attribution._types import Interval, TopologyComparison
from stratagem.errors import ConfigError

__all__ = ["compare_topologies", "matched_compute_ranking"]

_Z95 = 1.959963984540054


def compare_topologies(df: pd.DataFrame, *, outcome: str = "correct") -> list[TopologyComparison]:
    """Each topology's accuracy within each budget cell, ranked.

    Per cell and topology: ``accuracy`` with a 95% Wilson interval (a normal interval if the
    outcome is not 0/1), achieved ``mean_tokens`` (billed) next to the ``target`` budget,
    ``n`` runs, and ``rank`` (1 = most accurate; ties share the better rank). Rows without an
    outcome are left out.

    Args:
        df: Run records (columns ``topology``, ``budget``, ``tokens_total`` and the outcome).
        outcome: The success column.

    Returns:
        One comparison per budget cell, smallest budget first; rows best first.

    Raises:
        ConfigError: An empty table, a missing column, or no run with an outcome.
    """
    data = _known(df, outcome, "compare_topologies()")
    out: list[TopologyComparison] = []
    for budget, cell in data.groupby("budget", sort=True):
        stats = cell.groupby("topology", sort=True).agg(
            acc=("_y", "mean"), n=("_y", "size"), tokens=("tokens_total", "mean"),
            hits=("_y", "sum"), sd=("_y", "std"),
        )
        binary = bool(np.isin(cell["_y"].to_numpy(), (0.0, 1.0)).all())
        ranks = stats["acc"].rank(ascending=False, method="min")
        rows: dict[str, dict[str, object]] = {}
        for topo in sorted(stats.index, key=lambda t: (ranks[t], str(t))):
            s = stats.loc[topo]
            n = int(s["n"])
            acc = float(s["acc"])
            if binary:
                low, high = proportion_confint(round(float(s["hits"])), n, alpha=0.05,
                                               method="wilson")
            else:
                half = _Z95 * float(s["sd"]) / math.sqrt(n) if n > 1 else float("nan")
                low, high = acc - half, acc + half
            rows[str(topo)] = {
                "accuracy": Interval(acc, float(low), float(high)),
                "mean_tokens": float(s["tokens"]),
                "target": int(budget),
                "n": n,
                "rank": int(ranks[topo]),
            }
        out.append(TopologyComparison(budget=int(budget), rows=rows))
    return out


def matched_compute_ranking(df: pd.DataFrame, *, outcome: str = "correct") -> list[str]:
    """Topologies from most to least accurate at matched compute.

    The score of a topology is the mean of its per-budget accuracies over the budget cells
    that *every* topology was run in, so each topology is averaged over the same targets
    and a topology run only at large budgets gains nothing from it. Ties go by name.

    Args:
        df: Run records (columns ``topology``, ``budget`` and the outcome).
        outcome: The success column.

    Returns:
        Topology names, best first.

    Raises:
        ConfigError: As :func:`compare_topologies`, or no budget cell shared by all
            topologies.
    """
    what = "matched_compute_ranking()"
    data = _known(df, outcome, what, tokens=False)
    table = data.pivot_table(index="budget", columns="topology", values="_y", aggfunc="mean")
    shared = table.dropna(axis=0, how="any")
    if shared.empty:
        raise ConfigError(f"{what}: no budget cell has runs of every topology "
                          f"({sorted(map(str, table.columns))}); run them at a common budget")
    score = shared.mean(axis=0)
    return sorted((str(t) for t in score.index), key=lambda t: (-float(score[t]), t))


def _known(df: pd.DataFrame, outcome: str, what: str, *, tokens: bool = True) -> pd.DataFrame:
    cols = ["topology", "budget", *(["tokens_total"] if tokens else [])]
    require_table(df, [outcome, *cols], what=what)
    y, known = outcome_values(df, outcome, what=what)
    if y.size == 0:
        raise ConfigError(f"{what}: no run has a value in outcome column {outcome!r}")
    data = df.loc[known, cols].copy()
    data["_y"] = y
    return data
