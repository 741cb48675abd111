"""Terminal tables: :class:`rich.table.Table` objects the CLI prints as they are.

Cells are :class:`rich.text.Text`, never markup strings, so text such as ``[0.3, 0.5]`` or
``[REDACTED]`` is shown literally rather than read as rich markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from rich.table import Table
from rich.text import Text

from stratagem.attribution import Attribution, Finding, RoleReturn, TopologyComparison
from stratagem.budgets import Transfer, UsageTotals
from stratagem.report._grids import (
    Grid,
    attribution_grid,
    audit_grid,
    comparisons_grid,
    findings_grid,
    returns_grid,
    topology_grid,
    transfers_grid,
    waste_grid,
)

__all__ = [
    "attribution_table",
    "audit_table",
    "comparisons_table",
    "findings_table",
    "returns_table",
    "rich_table",
    "topology_table",
    "transfers_table",
    "waste_table",
]


def rich_table(grid: Grid) -> Table:
    """Render a grid as a rich table (simulated data: the title in bold red)."""
    table = Table(
        title=Text(grid.title, style="bold red" if grid.simulated else "bold"),
        caption=Text(grid.caption) if grid.caption else None,
        caption_justify="left",
    )
    for i, name in enumerate(grid.columns):
        table.add_column(
            Text(name), justify="right" if i in grid.right else "left", overflow="fold"
        )
    for row in grid.rows:
        table.add_row(*(Text(c) for c in row))
    if grid.totals is not None:
        table.add_section()
        table.add_row(*(Text(c) for c in grid.totals), style="bold")
    return table


def audit_table(
    groups: Mapping[Any, UsageTotals], by: str = "role", *, simulated: bool = False
) -> Table:
    """The token audit: calls, tokens, cost, estimates and errors per group, plus totals.

    Unknown is never shown as 0: a cached or reasoning count no row reported reads
    ``unknown``, one some rows left out reads ``1,234 (3/10 unknown)``, and a cost with some
    prices unknown is a lower bound (``≥$0.1200``).

    Args:
        groups: Group key -> totals, e.g. ``ledger.group_by("role")`` (tuple keys, from
            several group-by keys, are joined with ``/``).
        by: What the groups are (the first column's header).
        simulated: Whether the calls came from the simulated backend (marks the title).

    Returns:
        The table.
    """
    return rich_table(audit_grid(groups, by, simulated=simulated))


def topology_table(df: pd.DataFrame, comparisons: Sequence[TopologyComparison] = ()) -> Table:
    """Per topology and budget: runs, accuracy [95% CI], mean tokens, mean cost, mean waste.

    Args:
        df: Results, one row per run (the columns of ``RunRecord``).
        comparisons: If given, the accuracy intervals of the cells they cover are theirs
            (bootstrap); other cells get a Wilson score interval from ``df``.

    Returns:
        The table; its title says ``(SIMULATED)`` when any run is simulated.
    """
    return rich_table(topology_grid(df, comparisons))


def comparisons_table(
    comparisons: Sequence[TopologyComparison], *, simulated: bool = False
) -> Table:
    """Topologies ranked at matched compute: budget, topology, rank, accuracy, tokens, runs.

    Args:
        comparisons: One comparison per budget cell.
        simulated: Whether the runs were simulated (marks the title).
    """
    return rich_table(comparisons_grid(comparisons, simulated=simulated))


def findings_table(findings: Sequence[Finding]) -> Table:
    """The Findings: per claim its effect [95% CI], n, verdict, and the n that would
    decide an inconclusive one."""
    return rich_table(findings_grid(findings))


def attribution_table(attr: Attribution) -> Table:
    """Each variable group's share of the explained variance in success, with intervals.

    Columns: group, share [95% CI], R² part [95% CI], the group's terms; the caption gives
    R², the number of runs and of bootstrap resamples.
    """
    return rich_table(attribution_grid(attr))


def returns_table(returns: Sequence[RoleReturn], *, simulated: bool = False) -> Table:
    """Marginal accuracy per extra 1,000 tokens of each role, with intervals.

    Args:
        returns: One return per role.
        simulated: Whether the runs were simulated (marks the title).
    """
    return rich_table(returns_grid(returns, simulated=simulated))


def waste_table(waste: pd.DataFrame, *, simulated: bool = False) -> Table:
    """Billed, accepted and wasted tokens per topology.

    Args:
        waste: Columns ``topology, mean_billed, mean_accepted, mean_waste, waste_share``.
        simulated: Whether the runs were simulated (marks the title).
    """
    return rich_table(waste_grid(waste, simulated=simulated))


def transfers_table(
    transfers: Sequence[Transfer], *, simulated: bool = False, limit: int | None = None
) -> Table:
    """Budget moves between roles: run, from, to, tokens, reason, node, time; plus totals.

    Args:
        transfers: The ledger's transfers.
        simulated: Whether the runs were simulated (marks the title).
        limit: Show only the first ``limit`` transfers (the totals still count all).
    """
    return rich_table(transfers_grid(transfers, simulated=simulated, limit=limit))
