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
from stratagem.report import attribution_table, audit_table, findings_table, topology_table


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
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Rerun only the runs of the output folder "
                           "that lost model calls to endpoint failures or failed; each starts "
                           "over, and its new record replaces the old.")
    ] = False,
    backend: Annotated[
        str | None, typer.Option(help="Override [endpoint] backend (local, simulated, openai, "
                                      "vllm, ollama, llamacpp, lmstudio, generic).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="Override [endpoint] base_url.")] = None,
    model: Annotated[str | None, typer.Option(help="Override [endpoint] model.")] = None,
) -> None:
    """Run topologies x budgets x policies x seeds x suites; rerun to resume after Ctrl-C.

    Exits 1 when runs in the output folder lost model calls to endpoint failures or failed
    (their results are still written): rerun just those with --retry-failed."""
    runner = executor_for(executor, address=address,
                          log_level="error" if state.quiet else "warning")
    # The same resolution and bar as stratagem.ablate(), so both follow one set of rules.
    cfg, text = resolve_config(config, None if output is None else {"output": output})
    cfg = cfg.with_endpoint(backend=backend, base_url=base_url, model=model)
    overrides = [f"{k} = {v!r}" for k, v in (("backend", backend), ("base_url", base_url),
                                              ("model", model)) if v is not None]
    if overrides and text is not None:  # the copy in the output folder says what ran
        text += "\n# [endpoint] overridden on the command line: " + ", ".join(overrides) + "\n"
    with progress_bar(cfg.name, console=console, disable=state.quiet) as progress:
        outcome = asyncio.run(run_ablation(cfg, config_text=text, on_progress=progress,
                                           executor=runner, retry_failed=retry_failed))
    if outcome.interrupted:
        console.print(f"interrupted after {outcome.ran} run(s); rerun the same command to "
                      f"resume. Results so far: {outcome.output}", highlight=False)
        raise typer.Exit(130)
    sim = " [SIMULATED]" if outcome.simulated else ""
    if retry_failed and not outcome.retried:
        console.print(f"no run in {outcome.output} lost model calls or failed: nothing to "
                      "retry" + sim, highlight=False, markup=False)
    elif retry_failed:
        console.print(f"{outcome.retried} run(s) that lost calls or failed rerun, "
                      f"{outcome.failed} failed again, {outcome.lost_calls} lost calls again"
                      + sim, highlight=False, markup=False)
    else:
        lost = f", {outcome.lost_calls} lost model calls" if outcome.lost_calls else ""
        console.print(f"{outcome.ran} run(s) done, {outcome.skipped} already done before, "
                      f"{outcome.failed} failed{lost}" + sim, highlight=False, markup=False)
    if report:
        rep = report_ablation(outcome.output)
        if not state.quiet:
            console.print(audit_table(rep.audit, by="role", simulated=outcome.simulated))
            console.print(topology_table(rep.results, rep.comparisons))
            if rep.attribution is not None:
                console.print(attribution_table(rep.attribution))
            if rep.findings:
                console.print(findings_table(rep.findings))
            for note in rep.notes:
                console.print(note, style="yellow", markup=False)
        console.print(f"report: {rep.html}", highlight=False, markup=False)
    console.print(f"output folder: {outcome.output}", highlight=False, markup=False)
    if outcome.to_retry:
        again = f"stratagem ablate {config}" + (f" --output {output}" if output else "")
        # soft_wrap: no line breaks inserted, so the command can be copied whole.
        console.print(
            f"{len(outcome.to_retry)} of {outcome.planned} run(s) lost model calls to endpoint "
            f"failures or failed ({outcome.failed_attempts} failed attempt(s) in the ledger: "
            f"stratagem audit {outcome.output} --by status); their results are written but "
            "say less than they seem", style="yellow", highlight=False, markup=False,
            soft_wrap=True)
        console.print(f"rerun just those: {again} --retry-failed", style="yellow",
                      highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
