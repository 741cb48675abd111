"""Report tables as plain grids of redacted text, rendered by rich (terminal) and HTML alike.

Every cell, header, title and caption goes through :func:`stratagem._redact.redact` when the
grid is built, so neither renderer can show a secret.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem._redact import redact
from stratagem.attribution import Attribution, Finding, Interval, RoleReturn, TopologyComparison
from stratagem.budgets import Transfer, UsageTotals
from stratagem.report._summary import (
    fmt_cost,
    fmt_int,
    fmt_interval,
    fmt_pct,
    simulation_label,
    summarize_cells,
    titled,
)

__all__ = [
    "Grid",
    "attribution_grid",
    "audit_grid",
    "comparisons_grid",
    "findings_grid",
    "returns_grid",
    "runs_grid",
    "topology_grid",
    "transfers_grid",
    "waste_grid",
]

_SIM = "SIMULATED"


@dataclass(frozen=True, slots=True)
class Grid:
    """A table's text: title, headers, rows, an optional totals row and a caption.

    Attributes:
        title: The title (ends in ``(SIMULATED)`` for simulated data).
        columns: Column headers.
        rows: Body rows, one string per column.
        right: Indices of right-aligned (numeric) columns.
        totals: A totals row, shown apart from the body.
        caption: Notes under the table.
        simulated: Whether the data is (partly) simulated.
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: frozenset[int] = field(default_factory=frozenset)
    totals: tuple[str, ...] | None = None
    caption: str = ""
    simulated: bool = False


def _grid(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    label: str | None,
    right: Iterable[int] = (),
    totals: Sequence[str] | None = None,
    caption: str = "",
) -> Grid:
    return Grid(
        title=redact(titled(title, label)),
        columns=tuple(redact(c) for c in columns),
        rows=tuple(tuple(redact(str(c)) for c in row) for row in rows),
        right=frozenset(right),
        totals=None if totals is None else tuple(redact(str(c)) for c in totals),
        caption=redact(caption),
        simulated=label is not None,
    )


def _key(key: Any) -> str:
    if isinstance(key, tuple):
        return " / ".join(_key(k) for k in key)
    return "(none)" if key is None else str(key)


def _partial(value: int | None, unknown: int, calls: int) -> str:
    """A count some rows left unknown: never shown as 0 when nothing is known."""
    if value is None:
        return "unknown"
    if unknown:
        return f"{value:,} ({unknown}/{calls} unknown)"
    return f"{value:,}"


def _opt_sum(values: Iterable[float | int | None]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _combine(groups: Sequence[UsageTotals]) -> UsageTotals:
    cost = _opt_sum(t.cost_usd for t in groups)
    return UsageTotals(
        calls=sum(t.calls for t in groups),
        prompt_tokens=sum(t.prompt_tokens for t in groups),
        completion_tokens=sum(t.completion_tokens for t in groups),
        cached_tokens=_opt_sum(t.cached_tokens for t in groups),
        reasoning_tokens=_opt_sum(t.reasoning_tokens for t in groups),
        cost_usd=None if cost is None else round(float(cost), 10),
        cached_unknown=sum(t.cached_unknown for t in groups),
        reasoning_unknown=sum(t.reasoning_unknown for t in groups),
        cost_unknown=sum(t.cost_unknown for t in groups),
        estimated_calls=sum(t.estimated_calls for t in groups),
        error_calls=sum(t.error_calls for t in groups),
        cancelled_calls=sum(t.cancelled_calls for t in groups),
        latency_s=sum(t.latency_s for t in groups),
        bound_calls=sum(t.bound_calls for t in groups),
        lost_calls=sum(t.lost_calls for t in groups),
        bound_completion_tokens=sum(t.bound_completion_tokens for t in groups),
    )


def _audit_row(name: str, t: UsageTotals) -> tuple[str, ...]:
    return (
        name,
        f"{t.calls:,}",
        f"{t.prompt_tokens:,}",
        f"{t.completion_tokens:,}",
        _partial(t.cached_tokens, t.cached_unknown, t.calls),
        _partial(t.reasoning_tokens, t.reasoning_unknown, t.calls),
        f"{t.total_tokens:,}",
        fmt_cost(t.cost_usd, lower_bound=t.cost_unknown > 0),
        f"{t.estimated_calls:,}",
        f"{t.bound_calls:,} (≤{t.bound_completion_tokens:,} tok)" if t.bound_calls
        else "0",
        f"{t.error_calls:,}",
        f"{t.cancelled_calls:,}",
        f"{t.lost_calls:,}",
    )


def audit_grid(groups: Mapping[Any, UsageTotals], by: str, *, simulated: bool = False) -> Grid:
    """The ledger audit: one row per group, then the totals."""
    values = list(groups.values())
    caption = "Billed tokens (every attempt). unknown: no row reported it; "
    caption += "(k/n unknown): k of n calls did not; ≥$: a lower bound (some prices unknown). "
    caption += ("estimated: counted with tiktoken (no usage sent); bound: a reply lost after "
                "the server may have billed it, charged at the cap sent (≤N tok: the "
                "completion so charged, the most the total can exceed the bill by); lost: in "
                "flight when a process died (billed here, not in any run's totals).")
    if not values:
        caption = "No ledger rows. " + caption
    return _grid(
        f"Token audit by {by}",
        (
            by,
            "calls",
            "prompt",
            "completion",
            "cached",
            "reasoning",
            "total",
            "cost",
            "estimated",
            "bound",
            "errors",
            "cancelled",
            "lost",
        ),
        [_audit_row(_key(k), t) for k, t in groups.items()],
        label=_SIM if simulated else None,
        right=range(1, 13),
        totals=_audit_row("total", _combine(values)),
        caption=caption,
    )


def topology_grid(df: pd.DataFrame, comparisons: Sequence[TopologyComparison] = ()) -> Grid:
    """Per topology and budget: runs, accuracy with its 95% interval, mean tokens, cost, waste."""
    cells = summarize_cells(df, comparisons)
    rows = []
    for c in cells:
        runs = f"{c.runs:,}" if c.scored == c.runs else f"{c.runs:,} ({c.scored:,} scored)"
        if c.no_call:
            runs += f" ({c.no_call:,} no call)"
        mean_cost = c.mean_cost
        waste = fmt_int(c.mean_waste)
        if c.mean_tokens > 0 and not math.isnan(c.mean_waste):
            waste += f" ({c.mean_waste / c.mean_tokens:.0%})"
        rows.append(
            (
                c.topology,
                f"{c.budget:,}",
                runs,
                fmt_interval(c.accuracy, c.low, c.high),
                fmt_int(c.mean_tokens),
                fmt_cost(mean_cost, lower_bound=mean_cost is not None and c.cost_unknown > 0),
                waste,
            )
        )
    methods = {c.interval for c in cells} - {""}
    notes = {
        "bootstrap": "bootstrap (from the comparison)",
        "wilson": "Wilson score",
    }
    caption = "No runs." if not cells else "Tokens are billed tokens per run; waste = billed - "
    if cells:
        caption += "accepted. 95% intervals: " + (
            " / ".join(notes[m] for m in sorted(methods)) or "none (no run was scored)"
        )
        caption += "."
        if any(c.no_call for c in cells):
            caption += (" No call: runs whose budget could not fit a single model call (they"
                        " count as wrong; the cell's budget is too small for the topology).")
        if any(c.cost_unknown for c in cells):
            caption += " ≥$: a lower bound (some prices unknown)."
    return _grid(
        "Topologies by budget",
        (
            "topology",
            "budget",
            "runs",
            "accuracy [95% CI]",
            "mean tokens",
            "mean cost",
            "mean waste",
        ),
        rows,
        label=simulation_label(df),
        right=range(1, 7),
        caption=caption,
    )


def comparisons_grid(comparisons: Sequence[TopologyComparison], *, simulated: bool = False) -> Grid:
    """Topologies ranked at matched compute, one budget after another."""
    rows = []
    for comp in sorted(comparisons, key=lambda c: c.budget):
        ranked = sorted(comp.rows.items(), key=lambda kv: _as_float(kv[1].get("rank"), math.inf))
        for topology, row in ranked:
            acc = row.get("accuracy")
            rows.append(
                (
                    f"{comp.budget:,}",
                    str(topology),
                    fmt_int(_as_float(row.get("rank"))),
                    fmt_interval(acc.estimate, acc.low, acc.high)
                    if isinstance(acc, Interval)
                    else "n/a",
                    fmt_int(_as_float(row.get("mean_tokens"))),
                    fmt_int(_as_float(row.get("target"), float(comp.budget))),
                    fmt_int(_as_float(row.get("n"))),
                )
            )
    return _grid(
        "Topologies at matched compute",
        ("budget", "topology", "rank", "accuracy [95% CI]", "mean tokens", "target", "runs"),
        rows,
        label=_SIM if simulated else None,
        right=(0, 2, 3, 4, 5, 6),
        caption="" if rows else "No comparison.",
    )


def _as_float(value: object, default: float = math.nan) -> float:
    if isinstance(value, int | float):
        return float(value)
    return default


def attribution_grid(attr: Attribution) -> Grid:
    """Each group's share of the explained variance in success, and its part of R²."""
    order = sorted(attr.shares, key=lambda g: attr.shares[g].estimate, reverse=True)
    rows = []
    for group in order:
        share = attr.shares[group]
        part = attr.r2_parts.get(group)
        rows.append(
            (
                group,
                fmt_interval(share.estimate, share.low, share.high),
                "n/a"
                if part is None
                else fmt_interval(part.estimate, part.low, part.high, kind="plain"),
                ", ".join(attr.groups.get(group, ())),
            )
        )
    r2 = attr.r2
    r2_text = fmt_interval(r2.estimate, r2.low, r2.high, kind="plain")
    caption = (
        f"Method {attr.method.upper()}; R² = {r2_text}; {attr.n:,} runs; 95% intervals from "
        f"{attr.n_boot:,} bootstrap resamples. Shares sum to 100% of the explained variance."
    )
    if attr.skipped:
        caption += " No share: " + "; ".join(f"{g} ({why})" for g, why in attr.skipped.items())
        caption += "."
    return _grid(
        "Attribution of success",
        ("group", "share [95% CI]", "R² part [95% CI]", "terms"),
        rows,
        label=_SIM if attr.simulated else None,
        right=(1, 2),
        totals=("total", "100%", r2_text, ""),
        caption=caption,
    )


def findings_grid(findings: Sequence[Finding]) -> Grid:
    """Per claim: the effect with its 95% interval, n, the verdict, and for an inconclusive
    one the n that would decide it (80% power, alpha 0.05)."""
    rows = []
    for f in findings:
        c = f.claim
        if c.kind == "spend_share":
            effect = f"spend share {fmt_interval(f.effect.estimate, f.effect.low, f.effect.high)}"
            against = f"> {fmt_pct(c.threshold or 0.0)}"
            unit = "runs"
        else:
            effect = fmt_interval(f.effect.estimate, f.effect.low, f.effect.high, kind="signed")
            against = (f"within ±{fmt_pct(c.margin)}" if c.kind == "equivalent" and c.margin
                       else "> 0")
            effect += f" ({fmt_pct(f.treatment_rate)} vs {fmt_pct(f.control_rate)})"
            unit = "tasks"
        needed = "" if f.tasks_needed is None else f"{f.tasks_needed:,} {unit}"
        if f.verdict == "inconclusive" and f.tasks_needed is None:
            needed = "no n (no effect observed)"
        rows.append((c.id, c.statement, effect, against, f"{f.n:,}" + (
            f" ({f.excluded} left out)" if f.excluded else ""), f.verdict_text, needed))
    caption = ("Effect: treatment minus control success rate, paired by task and seed, with "
               "its paired-t 95% interval (when every pair agrees, the exact bound on the share of "
               "pairs that could disagree; spend share: the attribution's bootstrap "
               "interval). n: pairs (runs for a share). To decide: the n at which a test at "
               "alpha 0.05 has 80% power for the observed effect and variance.")
    return _grid(
        "Findings",
        ("claim", "statement", "effect [95% CI]", "claimed", "n", "verdict", "to decide"),
        rows,
        label=_SIM if any(f.simulated for f in findings) else None,
        right=(4,),
        caption=caption,
    )


def returns_grid(returns: Sequence[RoleReturn], *, simulated: bool = False) -> Grid:
    """Marginal return of each role's tokens: accuracy change per extra 1,000 tokens."""
    rows = [
        (
            r.role,
            fmt_interval(r.per_1k.estimate, r.per_1k.low, r.per_1k.high, kind="signed"),
            fmt_int(r.mean_tokens),
        )
        for r in returns
    ]
    return _grid(
        "Marginal return per 1,000 tokens",
        ("role", "Δ accuracy per 1k tokens [95% CI]", "mean tokens"),
        rows,
        label=_SIM if simulated else None,
        right=(1, 2),
        caption="Holding the other roles' tokens and the topology fixed; "
        "accuracy as a fraction (+0.010 = one point per 1k tokens)."
        if rows
        else "No marginal returns.",
    )


def waste_grid(waste: pd.DataFrame, *, simulated: bool = False) -> Grid:
    """Billed, accepted and wasted tokens per topology."""
    rows = []
    for rec in waste.to_dict("records"):
        share = _as_float(rec.get("waste_share"))
        rows.append(
            (
                str(rec.get("topology", "")),
                fmt_int(_as_float(rec.get("mean_billed"))),
                fmt_int(_as_float(rec.get("mean_accepted"))),
                fmt_int(_as_float(rec.get("mean_waste"))),
                fmt_pct(share),
            )
        )
    return _grid(
        "Waste by topology",
        ("topology", "mean billed", "mean accepted", "mean waste", "waste share"),
        rows,
        label=_SIM if simulated else None,
        right=(1, 2, 3, 4),
        caption="Per run; waste = billed - accepted (retries, discarded samples, cancelled "
        "branches)."
        if rows
        else "No waste figures.",
    )


def transfers_grid(
    transfers: Sequence[Transfer], *, simulated: bool = False, limit: int | None = None
) -> Grid:
    """Budget moves between roles, with their reasons (the first ``limit`` if given)."""
    shown = list(transfers)[:limit] if limit is not None else list(transfers)
    rows = [
        (
            t.run_id or "-",
            t.from_role,
            t.to_role,
            f"{t.tokens:,}",
            t.reason,
            t.node or "-",
            t.at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for t in shown
    ]
    caption = "" if transfers else "No budget transfers."
    if len(shown) < len(transfers):
        caption = f"Showing the first {len(shown):,} of {len(transfers):,} transfers."
    return _grid(
        "Budget transfers",
        ("run", "from", "to", "tokens", "reason", "node", "at (UTC)"),
        rows,
        label=_SIM if simulated else None,
        right=(3,),
        totals=(
            f"{len(transfers):,} transfers",
            "",
            "",
            f"{sum(t.tokens for t in transfers):,}",
            "",
            "",
            "",
        ),
        caption=caption,
    )


def _verdict(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unscored"
    return "correct" if bool(value) else "wrong"


def runs_grid(df: pd.DataFrame, *, limit: int = 200, answer_chars: int = 120) -> Grid:
    """The first ``limit`` runs: where, what, how many tokens, and the (truncated) answer."""
    rows = []
    for rec in df.head(limit).to_dict("records"):
        answer = str(rec.get("answer") or "")
        if len(answer) > answer_chars:
            answer = answer[: answer_chars - 1] + "…"
        cost = rec.get("cost_usd")
        rows.append(
            (
                str(rec.get("run_id", "")),
                str(rec.get("topology", "")),
                fmt_int(_as_float(rec.get("budget"))),
                str(rec.get("seed", "")),
                str(rec.get("task_id", "")),
                _verdict(rec.get("correct")),
                fmt_int(_as_float(rec.get("tokens_total"))),
                fmt_cost(_as_float(cost) if cost is not None else None),
                str(rec.get("error") or rec.get("stop_reason") or ""),
                answer,
            )
        )
    caption = f"Showing the first {len(rows):,} of {len(df):,} runs." if len(df) > limit else ""
    return _grid(
        "Runs",
        (
            "run",
            "topology",
            "budget",
            "seed",
            "task",
            "verdict",
            "tokens",
            "cost",
            "stop / error",
            "answer",
        ),
        rows,
        label=simulation_label(df),
        right=(2, 3, 6, 7),
        caption=caption if rows else "No runs.",
    )
