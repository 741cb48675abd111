"""Reports: terminal tables, PNG plots and one self-contained HTML report.

* Tables are :class:`rich.table.Table` objects: :func:`audit_table` (the ledger per role),
  :func:`topology_table` (accuracy, tokens, cost and waste per topology and budget),
  :func:`comparisons_table`, :func:`attribution_table`, :func:`findings_table` (each
  claim's effect, interval and verdict), :func:`returns_table`,
  :func:`waste_table` and :func:`transfers_table`.
* Plots are PNG files: :func:`plot_accuracy_vs_tokens`, :func:`plot_attribution` and
  :func:`plot_spend_per_role`. They never touch pyplot or the global backend.
* :func:`write_html_report` writes one HTML file that embeds the plots; :func:`build_report`
  writes the plots and that file in one go.

Data from the simulated backend is labelled ``SIMULATED`` in every table title, plot (title
and watermark) and report (banner). Every piece of text is redacted of secrets first.
"""

from __future__ import annotations

from stratagem.report._html import ReportPaths, build_report, write_html_report
from stratagem.report._plots import (
    figure_accuracy_vs_tokens,
    figure_attribution,
    figure_spend_per_role,
    plot_accuracy_vs_tokens,
    plot_attribution,
    plot_spend_per_role,
)
from stratagem.report._tables import (
    attribution_table,
    audit_table,
    comparisons_table,
    findings_table,
    returns_table,
    topology_table,
    transfers_table,
    waste_table,
)

__all__ = [
    "ReportPaths",
    "attribution_table",
    "audit_table",
    "build_report",
    "comparisons_table",
    "figure_accuracy_vs_tokens",
    "figure_attribution",
    "figure_spend_per_role",
    "findings_table",
    "plot_accuracy_vs_tokens",
    "plot_attribution",
    "plot_spend_per_role",
    "returns_table",
    "topology_table",
    "transfers_table",
    "waste_table",
    "write_html_report",
]
