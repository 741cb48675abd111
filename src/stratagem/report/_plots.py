"""PNG plots: accuracy vs tokens, attribution shares, spend per role.

Figures are built with :class:`matplotlib.figure.Figure` and drawn by
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, never through pyplot: no
global backend switch, no figure registry, so plotting is headless and safe from threads and
leaves the caller's matplotlib state alone. Labels taken from the data are redacted. The
``figure_*`` functions return the figure (to inspect or restyle in a notebook); the
``plot_*`` functions save it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, PercentFormatter

from stratagem._redact import redact
from stratagem.attribution import Attribution, TopologyComparison
from stratagem.report._summary import (
    CellSummary,
    fmt_interval,
    simulation_label,
    summarize_cells,
    titled,
)

__all__ = [
    "figure_accuracy_vs_tokens",
    "figure_attribution",
    "figure_spend_per_role",
    "plot_accuracy_vs_tokens",
    "plot_attribution",
    "plot_spend_per_role",
]

DPI = 130
"""Resolution of the saved PNGs."""
_SIM_COLOR = "#b00020"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_ROLE_COLORS = {
    "planner": "#4c72b0",
    "decomposer": "#dd8452",
    "solver": "#55a868",
    "judge": "#c44e52",
    "other": "#8c8c8c",
}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mark(fig: Figure, title: str, label: str | None) -> None:
    """Title the figure; simulated data also gets a red title and a watermark."""
    fig.suptitle(
        titled(title, label),
        fontsize=15,
        fontweight="bold",
        color=_SIM_COLOR if label else "black",
    )
    if label:
        fig.text(
            0.5,
            0.5,
            label,
            fontsize=64 if len(label) < 12 else 44,
            fontweight="bold",
            color=_SIM_COLOR,
            alpha=0.13,
            rotation=25,
            ha="center",
            va="center",
            zorder=10,
        )


def _empty(ax: Axes, message: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=14)


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _short(budget: int) -> str:
    return f"{budget / 1000:g}k" if budget >= 1000 else str(budget)


def _log2_axis(ax: Axes, xs: Sequence[float]) -> None:
    """A log2 x axis whose limits are powers of two, so at least two ticks show."""
    lo = 2.0 ** math.floor(math.log2(min(xs) / 1.15))
    hi = 2.0 ** math.ceil(math.log2(max(xs) * 1.15))
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
    ticks = [2.0**k for k in range(round(math.log2(lo)), round(math.log2(hi)) + 1)]
    if len(ticks) > 12:  # keep every other power so labels never overlap
        ticks = ticks[:: math.ceil(len(ticks) / 12)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))


def figure_accuracy_vs_tokens(
    df: pd.DataFrame, comparisons: Sequence[TopologyComparison] = ()
) -> Figure:
    """The figure :func:`plot_accuracy_vs_tokens` saves, unsaved (to inspect or restyle)."""
    cells = [c for c in summarize_cells(df, comparisons) if not math.isnan(c.accuracy)]
    fig = _new_figure(9.0, 5.8)
    ax = fig.add_subplot()
    _mark(fig, "Accuracy vs tokens per task", simulation_label(df))
    if not cells:
        _empty(ax, "No scored runs to plot." if len(df) else "No runs to plot.")
        return fig
    colors = matplotlib.colormaps["tab10"]
    topologies = list(dict.fromkeys(c.topology for c in cells))
    for i, topology in enumerate(topologies):
        line = [c for c in cells if c.topology == topology]
        acc = [c.accuracy for c in line]
        below = [0.0 if math.isnan(c.low) else max(0.0, c.accuracy - c.low) for c in line]
        above = [0.0 if math.isnan(c.high) else max(0.0, c.high - c.accuracy) for c in line]
        ax.errorbar(
            [c.mean_tokens for c in line],
            acc,
            yerr=[below, above],
            label=redact(topology),
            color=colors(i % 10),
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=7,
            linewidth=2,
            capsize=4,
            elinewidth=1.2,
        )
    xs = [c.mean_tokens for c in cells]
    if min(xs) > 0:
        _log2_axis(ax, xs)
        ax.set_xlabel("mean billed tokens per task (log₂ scale)", fontsize=12)
    else:  # a cell that spent nothing cannot sit on a log axis
        ax.set_xlabel("mean billed tokens per task", fontsize=12)
    budgets = sorted({c.budget for c in cells})
    ax.set_title(
        f"{sum(c.runs for c in cells):,} runs · {len(topologies)} "
        f"topolog{'y' if len(topologies) == 1 else 'ies'} · "
        f"budgets {', '.join(_short(b) for b in budgets)} · bars: 95% CI",
        fontsize=10,
    )
    ax.set_ylabel("accuracy", fontsize=12)
    ax.set_ylim(-0.03, 1.03)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.tick_params(labelsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="topology", fontsize=10, title_fontsize=10, loc="best")
    return fig


def plot_accuracy_vs_tokens(
    df: pd.DataFrame,
    path: str | Path,
    *,
    comparisons: Sequence[TopologyComparison] = (),
) -> Path:
    """Plot accuracy against achieved tokens, one line per topology across its budgets.

    x is the mean billed tokens per task of each (topology, budget) cell on a log2 scale;
    y is its accuracy with a 95% interval (bootstrap from ``comparisons`` where they cover
    the cell, Wilson otherwise). Simulated data is titled and watermarked ``SIMULATED``.

    Args:
        df: Results, one row per run (the columns of ``RunRecord``).
        path: Where to write the PNG (parent folders are created).
        comparisons: Optional comparisons whose intervals to use.

    Returns:
        ``path``.
    """
    return _save(figure_accuracy_vs_tokens(df, comparisons), path)


def figure_attribution(attr: Attribution) -> Figure:
    """The figure :func:`plot_attribution` saves, unsaved (to inspect or restyle)."""
    groups = sorted(attr.shares, key=lambda g: attr.shares[g].estimate)
    fig = _new_figure(8.5, max(3.6, 1.2 + 0.6 * len(groups)))
    ax = fig.add_subplot()
    _mark(
        fig,
        f"{attr.method.upper()} attribution of success",
        "SIMULATED" if attr.simulated else None,
    )
    if not groups:
        _empty(ax, "No attribution groups.")
        return fig
    shares = [attr.shares[g] for g in groups]
    est = [s.estimate for s in shares]
    below = [0.0 if math.isnan(s.low) else max(0.0, s.estimate - s.low) for s in shares]
    above = [0.0 if math.isnan(s.high) else max(0.0, s.high - s.estimate) for s in shares]
    colors = matplotlib.colormaps["tab10"]
    ax.barh(
        [redact(g) for g in groups],
        est,
        xerr=[below, above],
        color=[colors(i % 10) for i in range(len(groups))],
        capsize=5,
        error_kw={"elinewidth": 1.5},
    )
    for y, s, hi in zip(range(len(groups)), shares, above, strict=True):
        ax.text(s.estimate + hi + 0.01, y, f"{s.estimate:.0%}", va="center", fontsize=10)
    top = max([s.estimate + h for s, h in zip(shares, above, strict=True)] + [0.0])
    ax.set_xlim(min([0.0, *(s.low for s in shares if not math.isnan(s.low))]), max(0.5, top + 0.1))
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("share of explained variance in success (95% CI)", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    r2 = attr.r2
    ax.set_title(
        f"R² = {fmt_interval(r2.estimate, r2.low, r2.high, kind='plain')} · "
        f"{attr.n:,} runs · {attr.n_boot:,} bootstrap resamples"
        + (f"\nno share: {redact(', '.join(attr.skipped))}" if attr.skipped else ""),
        fontsize=10,
    )
    return fig


def plot_attribution(attr: Attribution, path: str | Path) -> Path:
    """Plot each group's share of the explained variance as bars with 95% whiskers.

    Args:
        attr: The attribution.
        path: Where to write the PNG (parent folders are created).

    Returns:
        ``path``.
    """
    return _save(figure_attribution(attr), path)


def figure_spend_per_role(df: pd.DataFrame) -> Figure:
    """The figure :func:`plot_spend_per_role` saves, unsaved (to inspect or restyle)."""
    cells = summarize_cells(df)
    fig = _new_figure(min(14.0, max(7.5, 3.0 + 0.55 * len(cells))), 6.0)
    ax = fig.add_subplot()
    _mark(fig, "Mean billed tokens per role", simulation_label(df))
    if not cells:
        _empty(ax, "No runs to plot.")
        return fig
    xs = _grouped_positions(cells)
    names = dict.fromkeys(r for c in cells for r in c.role_tokens)  # column order, then other
    roles = [r for r in names if any(_finite(c.role_tokens.get(r, 0.0)) > 0 for c in cells)]
    palette = matplotlib.colormaps["Set2"]
    bottom = [0.0] * len(cells)
    for i, role in enumerate(roles):
        heights = [_finite(c.role_tokens.get(role, 0.0)) for c in cells]
        color = _ROLE_COLORS.get(role, palette(i % 8))
        ax.bar(xs, heights, bottom=bottom, width=0.8, color=color, label=role)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    waste = [min(_finite(c.mean_waste), top) for c, top in zip(cells, bottom, strict=True)]
    if any(w > 0 for w in waste):
        ax.bar(
            xs,
            waste,
            bottom=[top - w for top, w in zip(bottom, waste, strict=True)],
            width=0.8,
            facecolor="none",
            edgecolor="black",
            hatch="///",
            linewidth=0.8,
            label="waste (billed − accepted)",
        )
    one_budget = len({c.budget for c in cells}) == 1
    if one_budget:
        names_axis: Axes = ax
        positions, labels = list(xs), [redact(c.topology) for c in cells]
        font: dict[str, Any] = {"fontsize": 10}
        width = 12
    else:  # budgets under the bars, each topology's name centred under its group
        ax.set_xticks(xs, [_short(c.budget) for c in cells], fontsize=9)
        groups: dict[str, list[float]] = {}
        for x, c in zip(xs, cells, strict=True):
            groups.setdefault(c.topology, []).append(x)
        names_axis = ax.secondary_xaxis("bottom")  # type: ignore[assignment]
        positions = [sum(v) / len(v) for v in groups.values()]
        labels = [f"\n{redact(name)}" for name in groups]  # a line below the budgets
        font = {"fontsize": 11, "fontweight": "bold"}
        width = max(10, 6 * max(len(v) for v in groups.values()))
        names_axis.tick_params(length=0, pad=8)
        names_axis.spines["bottom"].set_visible(False)
    names_axis.set_xticks(positions, [_wrap(n, width) for n in labels], **font)
    ax.set_ylabel("tokens per run (billed)", fontsize=12)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(
        "stacked by role; hatched: the wasted part of the bar"
        + ("" if one_budget else " · one bar per budget"),
        fontsize=10,
    )
    if roles or any(w > 0 for w in waste):
        ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _untangle(fig, names_axis, positions, labels, font)  # last: the legend takes its room
    return fig


def _wrap(label: str, width: int) -> str:
    """``label`` on lines of about ``width`` characters, broken after ``+``, ``_``, ``-``
    or a space (topology labels such as ``best_of_4+verifier`` have no spaces)."""
    lines, line = [], ""
    for part in re.findall(r"[^+_\- ]+[+_\- ]?|[+_\- ]", label):
        if line and len(line) + len(part.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    return "\n".join([*lines, line.rstrip()]) if line else "\n".join(lines)


_TILT = 30
"""Degrees by which tick labels too long to sit side by side are tilted."""


def _untangle(fig: Figure, axis: Axes, positions: Sequence[float], names: Sequence[str],
              font: dict[str, Any]) -> None:
    """If the (wrapped) tick labels of ``axis`` overlap once laid out, put each back on one
    line and tilt them: parallel lines ``d`` pixels apart are ``d * sin(tilt)`` apart."""
    for _ in range(2):  # constrained layout settles on the second pass (tall labels)
        fig.canvas.draw()
    boxes = [t.get_window_extent() for t in axis.get_xticklabels() if t.get_text()]
    if any(a.x1 > b.x0 for a, b in itertools.pairwise(boxes)):
        axis.set_xticks(positions, names, rotation=_TILT, ha="right", rotation_mode="anchor",
                        **font)


def _finite(v: float) -> float:
    return 0.0 if math.isnan(v) else v


def _grouped_positions(cells: Sequence[CellSummary]) -> list[float]:
    """Bar positions with a gap between topologies."""
    xs: list[float] = []
    x = 0.0
    for i, c in enumerate(cells):
        if i and c.topology != cells[i - 1].topology:
            x += 0.6
        xs.append(x)
        x += 1.0
    return xs


def plot_spend_per_role(df: pd.DataFrame, path: str | Path) -> Path:
    """Plot mean billed tokens per run, stacked by role, for each topology and budget.

    The part of each bar that was wasted (billed minus accepted: retries, discarded samples,
    cancelled branches) is hatched. Roles without a column of their own show as ``other``.

    Args:
        df: Results, one row per run (the columns of ``RunRecord``).
        path: Where to write the PNG (parent folders are created).

    Returns:
        ``path``.
    """
    return _save(figure_spend_per_role(df), path)
