"""One self-contained HTML report: inline CSS, plots as data URIs, no external resources.

All text is redacted (:func:`stratagem._redact.redact`) and then escaped
(:func:`html.escape`) before it is written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem import __version__
from stratagem._redact import redact
from stratagem.attribution import Attribution, Finding, RoleReturn, TopologyComparison
from stratagem.budgets import Transfer, UsageTotals
from stratagem.report._grids import (
    Grid,
    attribution_grid,
    audit_grid,
    comparisons_grid,
    findings_grid,
    returns_grid,
    runs_grid,
    topology_grid,
    transfers_grid,
    waste_grid,
)
from stratagem.report._plots import plot_accuracy_vs_tokens, plot_attribution, plot_spend_per_role
from stratagem.report._summary import simulation_label, summarize_cells

__all__ = ["ReportPaths", "build_report", "write_html_report"]

_CAPTIONS = {
    "accuracy_vs_tokens": "Accuracy vs mean billed tokens per task, one line per topology.",
    "attribution": "Share of the explained variance in success per variable group.",
    "spend_per_role": "Mean billed tokens per run by role; the hatched part was wasted.",
}
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
_TRANSFER_LIMIT = 500

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.meta{color:#555;font-size:.9rem}
.banner{background:#b00020;color:#fff;font-weight:700;padding:.8rem 1rem;border-radius:6px;
font-size:1.1rem;margin:1rem 0}
.notes{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem 1rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num,th.num{text-align:right;white-space:nowrap}
tr.totals td{font-weight:700;background:#fafafa}
h3.sim{color:#b00020}.caption{color:#555;font-size:.85rem;margin-top:0}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.85rem}
"""


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """What :func:`build_report` wrote.

    Attributes:
        html: The HTML report.
        plots: Plot name (``accuracy_vs_tokens``, ``attribution``, ``spend_per_role``) ->
            its PNG; ``attribution`` is missing when there was no attribution.
    """

    html: Path
    plots: dict[str, Path] = field(default_factory=dict)


def _e(text: str) -> str:
    return html.escape(redact(text))


def _table_html(grid: Grid) -> str:
    """A grid as HTML; its text was redacted when the grid was built, and is escaped here."""

    def cells(row: Sequence[str], tag: str) -> str:
        return "".join(
            f'<{tag} class="num">{html.escape(c)}</{tag}>'
            if i in grid.right
            else f"<{tag}>{html.escape(c)}</{tag}>"
            for i, c in enumerate(row)
        )

    sim = ' class="sim"' if grid.simulated else ""
    out = [f"<h3{sim}>{html.escape(grid.title)}</h3>"]
    if grid.rows or grid.totals is not None:
        out.append(f"<table><thead><tr>{cells(grid.columns, 'th')}</tr></thead><tbody>")
        out.extend(f"<tr>{cells(row, 'td')}</tr>" for row in grid.rows)
        if grid.totals is not None:
            out.append(f'<tr class="totals">{cells(grid.totals, "td")}</tr>')
        out.append("</tbody></table>")
    if grid.caption:
        out.append(f'<p class="caption">{html.escape(grid.caption)}</p>')
    return "\n".join(out)


def _figure_html(name: str, path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:  # an SVG could pull external resources; only raster images go inline
        return f"<p>Plot {_e(name)} ({_e(path.name)}) not embedded: not a PNG, JPEG or GIF.</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = _CAPTIONS.get(name, name)
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _auto_notes(df: pd.DataFrame) -> list[str]:
    """Notes on what the data cannot show, so a thin report explains itself."""
    notes: list[str] = []
    if len(df) == 0:
        return ["No runs: the results are empty, so there is nothing to summarize or plot."]
    cells = summarize_cells(df)
    topologies = {c.topology for c in cells}
    budgets = sorted({c.budget for c in cells})
    if len(topologies) == 1:
        notes.append(f"Only one topology ({next(iter(topologies))}): nothing to compare it with.")
    if len(budgets) == 1:
        notes.append(
            f"Only one budget ({budgets[0]:,} tokens per task): accuracy vs tokens has a "
            "single point per topology."
        )
    runs = sum(c.runs for c in cells)
    unscored = runs - sum(c.scored for c in cells)
    if unscored:
        notes.append(f"{unscored:,} of {runs:,} runs have no verdict and are left out of accuracy.")
    failed = sum(c.failed for c in cells)
    if failed:
        notes.append(f"{failed:,} runs failed outright (counted as wrong).")
    unknown_cost = sum(c.cost_unknown for c in cells)
    if unknown_cost:
        notes.append(
            f"The cost of {unknown_cost:,} runs is unknown (no price for the model): "
            "costs marked ≥ are lower bounds."
        )
    return notes


def _banner(df: pd.DataFrame, attribution: Attribution | None) -> str:
    label = simulation_label(df)
    if label == "PARTLY SIMULATED":
        n = sum(bool(v) for v in df["simulated"].tolist())
        return (
            f"PARTLY SIMULATED DATA: {n:,} of {len(df):,} runs come from the simulated backend. "
            "Do not compare them with real model runs."
        )
    if label or (attribution is not None and attribution.simulated):
        return (
            "SIMULATED DATA: these results come from the simulated backend, not from a "
            "language model. They test the pipeline; they say nothing about real models."
        )
    return ""


def _meta(df: pd.DataFrame) -> str:
    parts = [
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"stratagem {__version__}",
        f"{len(df):,} runs",
    ]
    for column, name in (("suite", "suite"), ("backend", "backend"), ("model", "model")):
        if column in df.columns and len(df):
            values = sorted({str(v) for v in df[column].tolist()})
            parts.append(f"{name}: {', '.join(values)}")
    return " · ".join(parts)


def write_html_report(
    path: str | Path,
    *,
    title: str,
    results: pd.DataFrame,
    attribution: Attribution | None,
    comparisons: Sequence[TopologyComparison],
    returns: Sequence[RoleReturn],
    waste: pd.DataFrame | None,
    audit: Mapping[str, UsageTotals],
    transfers: Sequence[Transfer],
    plots: Mapping[str, Path],
    notes: Sequence[str] = (),
    config_text: str | None = None,
    findings: Sequence[Finding] = (),
) -> Path:
    """Write one self-contained HTML report: tables, embedded plots, notes and config.

    The file needs nothing else: plots are inlined as base64 data URIs, the CSS is inline,
    and there are no scripts, fonts or links to fetch. Every piece of text is redacted of
    secrets and HTML-escaped. Simulated data gets a banner at the top.

    Args:
        path: Where to write the HTML (parent folders are created).
        title: The report's title.
        results: Results, one row per run (the columns of ``RunRecord``).
        attribution: The attribution, or ``None`` if there is none (a note says so).
        comparisons: Topologies compared at matched compute, per budget.
        returns: Marginal returns per role.
        waste: Waste per topology, or ``None``.
        audit: Ledger totals per role.
        transfers: Budget transfers.
        plots: Plot name -> image file (PNG), embedded in this order.
        notes: Extra notes, shown after the automatic ones.
        config_text: The configuration the runs used, shown verbatim (redacted).
        findings: The claims the ablation tests and what it says about them (a Findings
            section first, when there are any).

    Returns:
        ``path``.
    """
    sim = simulation_label(results) is not None or (
        attribution is not None and attribution.simulated
    )
    all_notes = _auto_notes(results)
    if attribution is None and not any("attribution" in str(n).lower() for n in notes):
        all_notes.append("No attribution: it was not computed (too few runs or nothing varied).")
    all_notes += [str(n) for n in notes]
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(_meta(results))}</p>']
    if banner := _banner(results, attribution):
        body.append(f'<div class="banner" role="alert">{_e(banner)}</div>')
    if all_notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in all_notes)
        body.append(f'<div class="notes"><strong>Notes</strong><ul>{items}</ul></div>')
    if findings:
        body.append("<h2>Findings</h2>")
        body.append(_table_html(findings_grid(findings)))
    if plots:
        body.append("<h2>Plots</h2>")
        body.extend(_figure_html(name, Path(p)) for name, p in plots.items())
    body.append("<h2>Results</h2>")
    body.append(_table_html(topology_grid(results, comparisons)))
    if comparisons:
        body.append(_table_html(comparisons_grid(comparisons, simulated=sim)))
    body.append("<h2>Attribution</h2>")
    if attribution is not None:
        body.append(_table_html(attribution_grid(attribution)))
    else:
        body.append("<p>No attribution.</p>")
    body.append(_table_html(returns_grid(returns, simulated=sim)))
    if waste is not None:
        body.append(_table_html(waste_grid(waste, simulated=sim)))
    body.append("<h2>Ledger</h2>")
    body.append(_table_html(audit_grid(audit, "role", simulated=sim)))
    body.append(_table_html(transfers_grid(transfers, simulated=sim, limit=_TRANSFER_LIMIT)))
    if len(results):
        body.append(
            f"<details><summary>Runs ({len(results):,})</summary>"
            f"{_table_html(runs_grid(results))}</details>"
        )
    if config_text is not None:
        body.append(f"<h2>Configuration</h2><pre>{_e(config_text)}</pre>")
    body.append(f'<p class="meta">stratagem {_e(__version__)}</p>')
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


def build_report(
    out_dir: str | Path,
    *,
    results: pd.DataFrame,
    attribution: Attribution | None,
    comparisons: Sequence[TopologyComparison],
    returns: Sequence[RoleReturn],
    waste: pd.DataFrame | None,
    audit: Mapping[str, UsageTotals],
    transfers: Sequence[Transfer],
    title: str = "stratagem report",
    config_text: str | None = None,
    notes: Sequence[str] = (),
    findings: Sequence[Finding] = (),
) -> ReportPaths:
    """Write the plots (PNG) and the HTML report that embeds them into ``out_dir``.

    Files: ``accuracy_vs_tokens.png``, ``attribution.png`` (only with an attribution),
    ``spend_per_role.png`` and ``report.html``. Degenerate inputs (no runs, one topology,
    one budget, no attribution) still give a report, with notes saying what is missing.

    Args:
        out_dir: The folder to write into (created if needed).
        results: Results, one row per run (the columns of ``RunRecord``).
        attribution: The attribution, or ``None``.
        comparisons: Topologies compared at matched compute, per budget.
        returns: Marginal returns per role.
        waste: Waste per topology, or ``None``.
        audit: Ledger totals per role.
        transfers: Budget transfers.
        title: The report's title.
        config_text: The configuration the runs used, shown in the report (redacted).
        notes: Extra notes for the report.
        findings: The findings of the ablation's claims.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "accuracy_vs_tokens": plot_accuracy_vs_tokens(
            results, out / "accuracy_vs_tokens.png", comparisons=comparisons
        )
    }
    if attribution is not None:
        plots["attribution"] = plot_attribution(attribution, out / "attribution.png")
    plots["spend_per_role"] = plot_spend_per_role(results, out / "spend_per_role.png")
    page = write_html_report(
        out / "report.html",
        title=title,
        results=results,
        attribution=attribution,
        comparisons=comparisons,
        returns=returns,
        waste=waste,
        audit=audit,
        transfers=transfers,
        plots=plots,
        notes=notes,
        findings=findings,
        config_text=config_text,
    )
    return ReportPaths(html=page, plots=plots)
