"""``stratagem ablate``: the ablation grid, with progress, resumable, audited, reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from stratagem.ablation import (
    executor_for,
    progress_bar,
    report_ablation,
    resolve_config,
    run_ablation,
)
from stratagem.cli._common import console, state
from stratagem.report import attribution_table, audit_table, topology_table


def ablate_command(
    config: Annotated[Path, typer.Argument(help="Ablation grid (TOML).")],
    output: Annotated[
        Path | None, typer.Option(help="Output folder (overrides the config's).")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="Where runs execute: local (this process) or ray (a Ray cluster; "
                               "needs the ray extra).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="With --executor ray: the cluster to join, e.g. "
                                      "HEAD:6379 (default: a Ray instance on this machine).")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the report when done.")] = True,
) -> None:
    """Run topologies x budgets x policies x seeds x suites; rerun to resume after Ctrl-C."""
    runner = executor_for(executor, address=address,
                          log_level="error" if state.quiet else "warning")
    # The same resolution and bar as stratagem.ablate(), so both follow one set of rules.
    cfg, text = resolve_config(config, None if output is None else {"output": output})
    with progress_bar(cfg.name, console=console, disable=state.quiet) as progress:
        outcome = asyncio.run(run_ablation(cfg, config_text=text, on_progress=progress,
                                           executor=runner))
    if outcome.interrupted:
        console.print(f"interrupted after {outcome.ran} run(s); rerun the same command to "
                      f"resume. Results so far: {outcome.output}", highlight=False)
        raise typer.Exit(130)
    console.print(f"{outcome.ran} run(s) done, {outcome.skipped} already done before, "
                  f"{outcome.failed} failed" + (" [SIMULATED]" if outcome.simulated else ""),
                  highlight=False, markup=False)
    if outcome.lost_calls:
        console.print(f"warning: {outcome.lost_calls} run(s) lost model calls through every "
                      "retry (column failed_calls; `stratagem audit` shows the error rows): "
                      "their results say less than they seem to", style="yellow",
                      highlight=False, markup=False)
    if report:
        rep = report_ablation(outcome.output)
        if not state.quiet:
            console.print(audit_table(rep.audit, by="role", simulated=outcome.simulated))
            console.print(topology_table(rep.results, rep.comparisons))
            if rep.attribution is not None:
                console.print(attribution_table(rep.attribution))
            for note in rep.notes:
                console.print(note, style="yellow", markup=False)
        console.print(f"report: {rep.html}", highlight=False, markup=False)
    console.print(f"output folder: {outcome.output}", highlight=False, markup=False)
