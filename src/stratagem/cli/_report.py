"""``stratagem report``: attribution, plots and the HTML report of an ablation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stratagem.ablation import report_ablation
from stratagem.cli._common import console, state
from stratagem.errors import ConfigError
from stratagem.report import attribution_table, findings_table, topology_table


def report_command(
    folder: Annotated[Path, typer.Argument(help="The output folder of `stratagem ablate`.")],
    boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the report (default: "
                                  "FOLDER/report); the folder itself is only read.")
    ] = None,
) -> None:
    """Attribute success to token spend vs coordination; write plots and report.html."""
    if boot < 0:
        raise ConfigError(f"--boot must be 0 or more resamples, got {boot}")
    report = report_ablation(folder, n_boot=boot, report_dir=out)
    if not state.quiet:
        if report.findings:
            console.print(findings_table(report.findings))
        console.print(topology_table(report.results, report.comparisons))
        if report.attribution is not None:
            console.print(attribution_table(report.attribution))
        for note in report.notes:
            console.print(note, style="yellow", markup=False)
    console.print(f"report: {report.html}", highlight=False, markup=False)
