"""From an ablation's output folder to its report: attribution, plots, one HTML page."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from pydantic import ValidationError

from stratagem.ablation._results import ResultsStore
from stratagem.attribution import (
    Attribution,
    Claim,
    Finding,
    attribute,
    claim_finding,
    compare_topologies,
    marginal_returns,
    waste_by_topology,
)
from stratagem.budgets import TokenLedger
from stratagem.errors import ConfigError, StratagemError
from stratagem.report import build_report

__all__ = ["AblationReport", "report_ablation", "write_report"]


@dataclass
class AblationReport:
    """The analysis of an ablation and where its report was written.

    Attributes:
        html: The self-contained HTML report.
        plots: The PNG plots by name.
        attribution: Variance shares (``None`` when the data cannot support them).
        notes: Why something is missing, in words.
    """

    html: Path
    plots: dict[str, Path]
    attribution: Attribution | None
    comparisons: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: Any = None
    audit: dict[Any, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    """What the runs say about the config's ``[claim]`` (empty without one)."""


def report_ablation(out_dir: str | Path, *, title: str | None = None,
                    n_boot: int = 1000, report_dir: str | Path | None = None) -> AblationReport:
    """Analyse ``out_dir`` (written by ``stratagem ablate``) and write ``report/`` in it.

    The folder's ledger and results are opened read-only, so a folder the user may only
    read can be reported on, with the report written elsewhere (``report_dir``).

    Args:
        out_dir: The output folder.
        title: The report's title (default: from the folder's name).
        n_boot: Bootstrap resamples for the intervals.
        report_dir: Where to write the report (default: ``out_dir/report``).

    Raises:
        ConfigError: If the folder has no results, or the report cannot be written there.
    """
    out = Path(out_dir)
    target = Path(report_dir) if report_dir is not None else out / "report"
    results_path, ledger_path = out / "results.sqlite", out / "ledger.sqlite"
    if not results_path.is_file() or not ledger_path.is_file():
        raise ConfigError(f"{out} is not an ablation output folder (no results.sqlite and "
                          "ledger.sqlite): pass the folder `stratagem ablate` wrote")
    with ResultsStore(results_path, readonly=True) as rs:
        df = rs.frame()
    if df.empty:
        raise ConfigError(f"{out} has no finished runs yet: run `stratagem ablate` first")
    ledger = TokenLedger.open(ledger_path, readonly=True)
    config_file = out / "config.toml"
    return write_report(
        df, ledger, target, title=title or f"stratagem ablation: {out.name}",
        config_text=config_file.read_text(encoding="utf-8") if config_file.is_file() else None,
        n_boot=n_boot)


def write_report(results: pd.DataFrame, ledger: TokenLedger, report_dir: str | Path, *,
                 title: str, config_text: str | None = None,
                 n_boot: int = 1000) -> AblationReport:
    """Analyse an ablation's results and ledger and write its report to ``report_dir``
    (what :func:`report_ablation` does once it has read the folder; ``stratagem view``
    writes it outside the folder, which it only reads)."""
    df = results
    notes: list[str] = []
    attribution: Attribution | None = None
    try:
        attribution = attribute(df, n_boot=n_boot)
    except (ConfigError, StratagemError, ValueError) as exc:
        notes.append(f"no attribution: {exc}")
    findings: list[Finding] = []
    claim = claim_of(config_text)
    if isinstance(claim, str):
        notes.append(claim)
    elif claim is not None:
        try:
            findings.append(claim_finding(df, claim, attribution))
        except ConfigError as exc:
            notes.append(f"no finding: {exc}")
    comparisons = compare_topologies(df)
    try:
        returns = marginal_returns(df)
    except (ConfigError, StratagemError, ValueError) as exc:
        returns = []
        notes.append(f"no marginal returns: {exc}")
    audit = ledger.group_by("role")
    target = Path(report_dir)
    try:
        paths = build_report(
            target,
            results=df,
            attribution=attribution,
            comparisons=comparisons,
            returns=returns,
            waste=waste_by_topology(df),
            audit=audit,
            transfers=ledger.transfers(),
            title=title,
            config_text=config_text,
            notes=notes,
            findings=findings,
        )
    except OSError as exc:  # e.g. a folder the user may only read
        raise ConfigError(
            f"cannot write the report in {target} ({exc.strerror or exc}): pass "
            "--out DIR (report_dir=) to write it elsewhere"
        ) from exc
    return AblationReport(paths.html, dict(paths.plots), attribution, list(comparisons), notes,
                          df, audit, findings)


def claim_of(config_text: str | None) -> Claim | str | None:
    """The ``[claim]`` of the config an ablation ran with (its copy in the output folder);
    ``None`` without one, or a note saying why it cannot be read."""
    if not config_text:
        return None
    try:
        table = tomllib.loads(config_text).get("claim")
    except tomllib.TOMLDecodeError as exc:
        return f"no findings: the folder's config.toml is not valid TOML ({exc})"
    if table is None:
        return None
    try:
        return Claim.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"no findings: claim.{where}: {first['msg']}"
