"""``stratagem ablate``, ``audit`` and ``report`` on simulated ablation folders, in-process."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import AblationOutcome, ResultsStore
from stratagem.budgets import LedgerStore

Cli = Callable[..., Any]
ConfigFile = Callable[[Path, Path], Path]


# -- audit --------------------------------------------------------------------------------------


def test_audit_json_parses_and_matches_the_ledger(cli: Cli, sim_output: Path) -> None:
    result = cli("audit", sim_output, "--by", "role", "--format", "json")

    assert result.code == 0
    payload = json.loads(result.out)
    assert payload["by"] == ["role"]
    with LedgerStore(sim_output / "ledger.sqlite") as store:
        by_role = store.group_by("role")
        transfers = store.transfers()
    assert {g["key"]: g["total_tokens"] for g in payload["groups"]} == {
        role: t.total_tokens for role, t in by_role.items()}
    assert {g["key"]: g["calls"] for g in payload["groups"]} == {
        role: t.calls for role, t in by_role.items()}
    assert len(payload["transfers"]) == len(transfers) > 0


def test_audit_csv_has_a_header_and_a_row_per_group(cli: Cli, sim_output: Path) -> None:
    result = cli("audit", sim_output, "--by", "role", "--by", "label:topology",
                 "--format", "csv")

    assert result.code == 0
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert rows
    assert {"key", "calls", "prompt_tokens", "completion_tokens", "total_tokens"} <= set(rows[0])
    with LedgerStore(sim_output / "ledger.sqlite") as store:
        pairs = store.group_by("role", "label:topology")
    assert {r["key"] for r in rows} == {f"{role}|{topo}" for role, topo in pairs}
    assert sum(int(r["total_tokens"]) for r in rows) == sum(
        t.total_tokens for t in pairs.values())


def test_audit_filters_with_where(cli: Cli, sim_output: Path) -> None:
    result = cli("audit", sim_output, "--by", "label:topology", "--where", "role=judge",
                 "--format", "json")

    groups = json.loads(result.out)["groups"]
    with LedgerStore(sim_output / "ledger.sqlite") as store:
        judged = store.group_by("label:topology", role="judge")
    assert {g["key"]: g["total_tokens"] for g in groups} == {
        k: t.total_tokens for k, t in judged.items()}
    assert set(judged) == {"best_of_n(n=2,select=judge)"}


def test_audit_of_a_ledger_file_equals_audit_of_its_folder(cli: Cli, sim_output: Path) -> None:
    of_folder = cli("audit", sim_output, "--format", "json").out
    of_file = cli("audit", sim_output / "ledger.sqlite", "--format", "json").out

    assert json.loads(of_folder) == json.loads(of_file)


def test_audit_table_shows_spend_waste_and_transfers(cli: Cli, sim_output: Path) -> None:
    result = cli("audit", sim_output)

    assert result.code == 0
    assert "Token audit by role" in result.out
    assert "Waste by topology" in result.out
    assert "transfers" in result.out.lower()
    assert "Traceback" not in result.err


def test_audit_table_of_a_simulated_ablation_says_so(cli: Cli, sim_output: Path) -> None:
    assert "SIMULATED" in cli("audit", sim_output).out


# -- report -------------------------------------------------------------------------------------


def test_report_writes_the_html_and_names_it(cli: Cli, sim_output: Path) -> None:
    result = cli("report", sim_output, "--boot", "50")

    assert result.code == 0, result.err
    html = sim_output / "report" / "report.html"
    assert f"report: {html}" in result.out
    assert "SIMULATED" in html.read_text(encoding="utf-8")
    assert len(list((sim_output / "report").glob("*.png"))) >= 3


def test_report_without_bootstrap_intervals(cli: Cli, sim_output: Path) -> None:
    assert cli("report", sim_output, "--boot", "0").code == 0


def test_report_with_a_negative_bootstrap_count_is_a_users_mistake(
    cli: Cli, sim_output: Path
) -> None:
    result = cli("report", sim_output, "--boot", "-3")

    assert result.code == 2
    assert len(result.err_lines) == 1


# -- ablate -------------------------------------------------------------------------------------


def test_ablate_runs_a_simulated_grid_and_names_its_output_folder(
    cli: Cli, tmp_path: Path, sim_config_file: ConfigFile
) -> None:
    out = tmp_path / "out"
    config = sim_config_file(tmp_path / "tiny.toml", out)

    result = cli("ablate", config)

    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert lines[-1] == f"output folder: {out}"
    assert "18 run(s) done, 0 already done before, 0 failed [SIMULATED]" in result.out
    assert f"report: {out / 'report' / 'report.html'}" in result.out
    for name in ("results.sqlite", "results.csv", "results.parquet", "ledger.sqlite",
                 "config.toml", "report/report.html"):
        assert (out / name).is_file(), name
    assert (out / "config.toml").read_text(encoding="utf-8") == config.read_text(
        encoding="utf-8")


def test_ablate_again_skips_everything(cli: Cli, tmp_path: Path,
                                       sim_config_file: ConfigFile) -> None:
    config = sim_config_file(tmp_path / "tiny.toml", tmp_path / "out")
    assert cli("-q", "ablate", config, "--no-report").code == 0

    result = cli("-q", "ablate", config, "--no-report")

    assert result.code == 0
    assert "0 run(s) done, 18 already done before" in result.out
    assert "report:" not in result.out


def test_ablate_output_option_overrides_the_config(cli: Cli, tmp_path: Path,
                                                   sim_config_file: ConfigFile) -> None:
    config = sim_config_file(tmp_path / "tiny.toml", tmp_path / "from-config")

    result = cli("-q", "ablate", config, "--output", tmp_path / "elsewhere", "--no-report")

    assert result.code == 0
    assert result.out.strip().splitlines()[-1] == f"output folder: {tmp_path / 'elsewhere'}"
    assert not (tmp_path / "from-config").exists()
    with ResultsStore(tmp_path / "elsewhere" / "results.sqlite") as rs:
        assert len(rs.done()) == 18


def _cancel_midway(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Cancel the ablation's event loop task after ``after`` runs, as Ctrl-C does."""
    from stratagem.ablation import run_ablation as real

    async def cancelled(config: Any, *, on_progress: Any = None, **kwargs: Any) -> Any:
        main = asyncio.current_task()
        assert main is not None

        def progress(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(done, total)
            if done >= after:
                main.cancel()

        outcome: AblationOutcome = await real(config, on_progress=progress, **kwargs)
        return outcome

    monkeypatch.setattr("stratagem.cli._ablate.run_ablation", cancelled)  # the command's seam


def test_an_interrupted_ablate_says_how_to_resume_and_resumes(
    cli: Cli, tmp_path: Path, sim_config_file: ConfigFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sim_config_file(tmp_path / "tiny.toml", tmp_path / "out")
    with monkeypatch.context() as patch:
        _cancel_midway(patch, after=4)
        stopped = cli("-q", "ablate", config)
    assert "rerun the same command to resume" in stopped.out
    assert "Traceback" not in stopped.err
    with ResultsStore(tmp_path / "out" / "results.sqlite") as rs:
        done = len(rs.done())
    assert 4 <= done < 18

    again = cli("-q", "ablate", config, "--no-report")

    assert again.code == 0
    assert f"{18 - done} run(s) done, {done} already done before" in again.out


def test_an_interrupted_ablate_exits_130(
    cli: Cli, tmp_path: Path, sim_config_file: ConfigFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sim_config_file(tmp_path / "tiny.toml", tmp_path / "out")
    _cancel_midway(monkeypatch, after=4)

    assert cli("-q", "ablate", config).code == 130


def test_ablate_endpoint_options_override_the_config_and_are_recorded(
        cli: Cli, tmp_path: Path, sim_config_file: ConfigFile) -> None:
    config = tmp_path / "tiny.toml"
    sim_config_file(config, tmp_path / "out")
    local = config.read_text(encoding="utf-8").replace('backend = "simulated"',
                                                       'backend = "local"')
    assert local != config.read_text(encoding="utf-8")
    config.write_text(local, encoding="utf-8")

    result = cli("-q", "ablate", config, "--backend", "simulated", "--no-report")

    assert result.code == 0, result.err
    with ResultsStore(tmp_path / "out" / "results.sqlite") as rs:
        assert {r.backend for r in rs.records()} == {"simulated"}
    copied = (tmp_path / "out" / "config.toml").read_text(encoding="utf-8")
    assert "# [endpoint] overridden on the command line: backend = 'simulated'" in copied


def test_a_bad_endpoint_option_is_a_users_mistake_naming_it(
        cli: Cli, tmp_path: Path, sim_config_file: ConfigFile) -> None:
    config = sim_config_file(tmp_path / "tiny.toml", tmp_path / "out")

    result = cli("ablate", config, "--base-url", "ftp://x")

    assert result.code == 2
    assert result.err_lines == [result.err_lines[0]] and "--base-url" in result.err
    assert not (tmp_path / "out").exists()


def test_audit_says_how_much_of_the_total_is_upper_bounds(cli: Cli, tmp_path: Path) -> None:
    from stratagem.budgets import LedgerEntry

    path = tmp_path / "ledger.sqlite"
    with LedgerStore(path) as store:
        for tokens, status in ((32, "error"), (24, "lost")):
            store.append(LedgerEntry(role="solver", model="m", prompt_tokens=10,
                                     completion_tokens=tokens, cap_sent=tokens,
                                     usage_source="bound", status=status))
        store.append(LedgerEntry(role="judge", model="m", prompt_tokens=10,
                                 completion_tokens=5))
    table = cli("audit", path).out
    assert "2 (≤56 tok)" in table and "the most the total can exceed the bill by" in table
    groups = json.loads(cli("audit", path, "--format", "json").out)["groups"]
    assert {g["key"]: g["bound_completion_tokens"] for g in groups} == {"judge": 0,
                                                                        "solver": 56}
