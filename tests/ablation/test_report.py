"""From an ablation's output folder to its report: report.html and the PNG plots, labelled
SIMULATED when they are, and a clear ConfigError for a folder that is not an output."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import (
    AblationConfig,
    AblationOutcome,
    AblationReport,
    ResultsStore,
    parse_config,
    report_ablation,
    run_ablation,
)
from stratagem.budgets import LedgerStore
from stratagem.errors import ConfigError

SECRET = "sk-" + "Rp4" * 12
CONFIG_TEXT = f'name = "report-test"\n# api_key = "{SECRET}" (never in a report)\n'
PNG = b"\x89PNG\r\n\x1a\n"


def sim_config(out: Path, **grid: Any) -> AblationConfig:
    return parse_config({
        "name": "report-test",
        "output": str(out),
        "endpoint": {"backend": "simulated"},
        "grid": {"topologies": ["single", {"name": "best_of_n", "n": 2, "select": "vote"}],
                 "budgets": [400, 1600], **grid},
        "suites": [{"name": "arith", "n": 4}],
        "run": {"durable": False},
    })


@dataclass(frozen=True)
class Reported:
    out: Path
    outcome: AblationOutcome
    report: AblationReport


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    out = tmp_path_factory.mktemp("report") / "sim-out"
    outcome = asyncio.run(run_ablation(sim_config(out), config_text=CONFIG_TEXT))
    return Reported(out, outcome, report_ablation(out, n_boot=50))


def test_the_report_and_its_plots_are_written_in_the_folder(reported: Reported) -> None:
    report = reported.report

    assert report.html == reported.out / "report" / "report.html"
    assert report.html.is_file()
    assert len(report.plots) >= 3
    for path in report.plots.values():
        assert path.parent == reported.out / "report"
        assert path.suffix == ".png"
        assert path.read_bytes().startswith(PNG)


def test_a_simulated_report_says_so(reported: Reported) -> None:
    html = reported.report.html.read_text(encoding="utf-8")

    assert "SIMULATED" in html
    assert reported.report.attribution is not None
    assert reported.report.attribution.simulated


def test_the_report_embeds_the_config_without_its_secrets(reported: Reported) -> None:
    html = reported.report.html.read_text(encoding="utf-8")

    assert "report-test" in html
    assert SECRET not in html


def test_the_report_reads_every_run_and_the_whole_ledger(reported: Reported) -> None:
    report = reported.report

    assert len(report.results) == reported.outcome.planned
    assert set(report.results["topology"]) == {"single", "best_of_n(n=2,select=vote)"}
    with LedgerStore(reported.out / "ledger.sqlite") as store:
        by_role = store.group_by("role")
    assert {role: t.total_tokens for role, t in report.audit.items()} == {
        role: t.total_tokens for role, t in by_role.items()}
    assert sum(t.total_tokens for t in report.audit.values()) == report.results[
        "tokens_total"].sum()


def test_the_default_title_names_the_folder_and_a_title_can_be_given(
    reported: Reported,
) -> None:
    assert "stratagem ablation: sim-out" in reported.report.html.read_text(encoding="utf-8")

    titled = report_ablation(reported.out, title="My sweep", n_boot=20)

    assert "My sweep" in titled.html.read_text(encoding="utf-8")


def test_a_partial_ablation_can_be_reported(tmp_path: Path) -> None:
    out = tmp_path / "partial"

    async def interrupted() -> AblationOutcome:
        main: asyncio.Future[AblationOutcome] | None = None

        def progress(done: int, total: int) -> None:
            if done >= 6 and main is not None:
                main.cancel()

        main = asyncio.ensure_future(run_ablation(sim_config(out), on_progress=progress))
        return await main

    outcome = asyncio.run(interrupted())
    assert outcome.interrupted

    report = report_ablation(out, n_boot=20)

    assert report.html.is_file()
    assert len(report.results) == outcome.ran < outcome.planned


@pytest.mark.parametrize("kind", ["empty", "missing", "ledger only", "results only"])
def test_a_folder_that_is_not_an_output_folder_is_a_config_error(
    tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "missing" if kind == "missing" else tmp_path
    if kind == "ledger only":
        LedgerStore(tmp_path / "ledger.sqlite").close()
    if kind == "results only":
        ResultsStore(tmp_path / "results.sqlite").close()

    with pytest.raises(ConfigError, match="not an ablation output folder"):
        report_ablation(folder)


def test_an_output_folder_without_finished_runs_is_a_config_error(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "ledger.sqlite").close()
    ResultsStore(tmp_path / "results.sqlite").close()

    with pytest.raises(ConfigError, match="no finished runs"):
        report_ablation(tmp_path)
