"""Per-cell summaries of a results frame, the simulation label, and number formatting.

Tables, plots and the HTML report all read these, so a number is computed (and printed) the
same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, SupportsInt, cast

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from statsmodels.stats.proportion import proportion_confint

from stratagem.attribution import Interval, TopologyComparison

__all__ = [
    "CellSummary",
    "fmt_cost",
    "fmt_int",
    "fmt_interval",
    "fmt_pct",
    "fmt_signed",
    "roles_of",
    "simulation_label",
    "summarize_cells",
    "titled",
]


def simulation_label(df: pd.DataFrame | None) -> str | None:
    """``"SIMULATED"``, ``"PARTLY SIMULATED"`` or ``None`` (no simulated row, or no rows)."""
    if df is None or len(df) == 0 or "simulated" not in df.columns:
        return None
    flags = [bool(v) for v in df["simulated"].tolist()]
    if all(flags):
        return "SIMULATED"
    if any(flags):
        return "PARTLY SIMULATED"
    return None


def titled(title: str, label: str | None) -> str:
    """``title`` with ``(SIMULATED)`` (or the given label) appended when there is one."""
    return f"{title} ({label})" if label else title


@dataclass(frozen=True, slots=True)
class CellSummary:
    """One (topology, budget) cell of a results frame.

    Attributes:
        topology: The topology.
        budget: The cell's target tokens per task.
        runs: Runs in the cell.
        scored: Runs with a verdict (``correct`` not ``None``); accuracy is over these.
        accuracy: Share of scored runs that were correct (NaN when none was scored).
        low: Lower end of the accuracy's 95% interval (NaN when unknown).
        high: Upper end of the accuracy's 95% interval.
        interval: ``"bootstrap"`` (from a comparison), ``"wilson"`` or ``""`` (none).
        mean_tokens: Mean billed tokens per run.
        mean_accepted: Mean accepted tokens per run.
        mean_waste: Mean wasted (billed minus accepted) tokens per run.
        cost_sum: Sum of the known costs.
        cost_unknown: Runs whose cost is unknown (then ``cost_sum / runs`` is a lower bound).
        role_tokens: Mean billed tokens per role (``other`` for roles without a column).
        failed: Runs that failed outright (``error`` set).
        no_call: Runs that made no model call because their budget could not fit one
            (``no_call``): their failures say the budget is too small, not the model weak.
        simulated: Whether any run in the cell is simulated.
    """

    topology: str
    budget: int
    runs: int
    scored: int
    accuracy: float
    low: float
    high: float
    interval: str
    mean_tokens: float
    mean_accepted: float
    mean_waste: float
    cost_sum: float
    cost_unknown: int
    role_tokens: dict[str, float]
    failed: int
    simulated: bool
    no_call: int = 0

    @property
    def mean_cost(self) -> float | None:
        """Mean cost per run; ``None`` when every run's cost is unknown."""
        if self.cost_unknown >= self.runs:  # also when there are no runs
            return None
        return self.cost_sum / self.runs


def _column(g: pd.DataFrame, name: str, default: Any) -> list[Any]:
    if name in g.columns:
        return list(g[name].tolist())
    return [default] * len(g)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _mean(values: Sequence[Any]) -> float:
    nums = [float(v) for v in values if not _is_missing(v)]
    return sum(nums) / len(nums) if nums else math.nan


def roles_of(df: pd.DataFrame) -> list[str]:
    """Roles with a token column of their own (``tokens_<role>``), in column order."""
    # Read from the frame rather than imported from stratagem.ablation, which imports this
    # package (its report step): the frame is the contract.
    return [
        str(c)[len("tokens_") :]
        for c in df.columns
        if str(c).startswith("tokens_") and str(c) != "tokens_total"
    ]


def _comparison_intervals(
    comparisons: Sequence[TopologyComparison],
) -> dict[tuple[str, int], Interval]:
    out: dict[tuple[str, int], Interval] = {}
    for comp in comparisons:
        for topology, row in comp.rows.items():
            acc = row.get("accuracy")
            if isinstance(acc, Interval):
                out[(str(topology), int(comp.budget))] = acc
    return out


def summarize_cells(
    df: pd.DataFrame, comparisons: Sequence[TopologyComparison] = ()
) -> list[CellSummary]:
    """Summarize ``df`` per (topology, budget): topologies in order of first appearance,
    budgets ascending.

    Accuracy intervals come from ``comparisons`` where they cover the cell (bootstrap) and
    are Wilson score intervals otherwise.
    """
    if len(df) == 0:
        return []
    boot = _comparison_intervals(comparisons)
    order = {t: i for i, t in enumerate(dict.fromkeys(str(t) for t in df["topology"].tolist()))}
    role_names = roles_of(df)
    cells: list[CellSummary] = []
    for (raw_topology, raw_budget), g in df.groupby(["topology", "budget"], sort=False):
        topology, budget = str(raw_topology), int(cast(SupportsInt, raw_budget))
        n = len(g)
        verdicts = [bool(v) for v in _column(g, "correct", None) if not _is_missing(v)]
        scored, hits = len(verdicts), sum(verdicts)
        accuracy = hits / scored if scored else math.nan
        low = high = math.nan
        interval = ""
        if (topology, budget) in boot:
            iv = boot[(topology, budget)]
            accuracy, low, high, interval = iv.estimate, iv.low, iv.high, "bootstrap"
        elif scored:
            lo, hi = proportion_confint(hits, scored, alpha=0.05, method="wilson")
            low, high, interval = float(lo), float(hi), "wilson"
        costs = _column(g, "cost_usd", None)
        total = _column(g, "tokens_total", 0)
        per_role = {r: [float(v) for v in _column(g, f"tokens_{r}", 0)] for r in role_names}
        roles = {r: _mean(v) for r, v in per_role.items()}
        # Roles without a column of their own (user roles) count only in the total.
        other = [float(t) - sum(v[i] for v in per_role.values()) for i, t in enumerate(total)]
        roles["other"] = max(0.0, _mean(other))
        cells.append(
            CellSummary(
                topology=topology,
                budget=budget,
                runs=n,
                scored=scored,
                accuracy=accuracy,
                low=low,
                high=high,
                interval=interval,
                mean_tokens=_mean(total),
                mean_accepted=_mean(_column(g, "accepted_tokens", 0)),
                mean_waste=_mean(_column(g, "waste_tokens", 0)),
                cost_sum=sum(float(c) for c in costs if not _is_missing(c)),
                cost_unknown=sum(1 for c in costs if _is_missing(c)),
                role_tokens=roles,
                failed=sum(1 for e in _column(g, "error", None) if not _is_missing(e) and e),
                simulated=any(bool(v) for v in _column(g, "simulated", False)),
                no_call=sum(1 for v in _column(g, "no_call", False) if not _is_missing(v) and v),
            )
        )
    cells.sort(key=lambda c: (order[c.topology], c.budget))
    return cells


def fmt_int(value: float | None) -> str:
    """A count or token number with thousands separators (``unknown`` for None/NaN)."""
    if value is None or math.isnan(value):
        return "unknown"
    return f"{value:,.0f}"


def fmt_cost(value: float | None, *, lower_bound: bool = False) -> str:
    """Dollars; ``unknown`` for None, ``≥`` in front when some prices were unknown."""
    if value is None or math.isnan(value):
        return "unknown"
    if value == 0 or value >= 0.01:
        text = f"${value:,.4f}" if value < 100 else f"${value:,.2f}"
    else:
        text = f"${value:.6f}"
    return f"≥{text}" if lower_bound else text


def fmt_pct(value: float) -> str:
    """A share as a percentage (``n/a`` for NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def fmt_signed(value: float, digits: int = 3) -> str:
    """A number with an explicit sign (``n/a`` for NaN)."""
    return "n/a" if math.isnan(value) else f"{value:+.{digits}f}"


def fmt_interval(estimate: float, low: float, high: float, *, kind: str = "pct") -> str:
    """``estimate [low, high]``; ``kind`` is ``pct``, ``signed`` or ``plain`` (3 decimals)."""

    def one(v: float) -> str:
        if kind == "pct":
            return fmt_pct(v)
        if kind == "signed":
            return fmt_signed(v)
        return "n/a" if math.isnan(v) else f"{v:.3f}"

    if math.isnan(low) or math.isnan(high):
        return one(estimate)
    return f"{one(estimate)} [{one(low)}, {one(high)}]"
