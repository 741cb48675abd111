"""Like-for-like cells: one temperature for every topology unless a config says otherwise,
runs whose budget fit no call reported as such, and roles encoded by the topology's design."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from stratagem.ablation import ResultsStore, RunRecord, parse_config, run_ablation
from stratagem.errors import ConfigError
from stratagem.report import topology_table


def _run(out: Path, topologies: list[Any], budgets: list[int], **run: Any) -> list[RunRecord]:
    config = parse_config({
        "name": "like-for-like", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": topologies, "budgets": budgets},
        "suites": [{"name": "arith", "n": 3, "depth": 2}],
        "run": {"concurrency": 2, "split": {"solver": 1.0}, **run},
    })
    asyncio.run(run_ablation(config))
    with ResultsStore(out / "results.sqlite") as rs:
        return rs.records()


def test_every_topology_samples_at_run_temperature_unless_its_table_says(
        tmp_path: Path) -> None:
    recs = _run(tmp_path / "out", [
        "single", {"name": "best_of_n", "n": 2, "select": "vote", "label": "bo2"},
        {"name": "single", "temperature": 0, "label": "greedy"}], [2000], temperature=0.6)
    temps: dict[str, set[float | None]] = {}
    for r in recs:
        temps.setdefault(r.topology, set()).add(r.temperature)
    assert temps == {"single": {0.6}, "bo2": {0.6}, "greedy": {0.0}}


def test_a_topology_temperature_shows_in_its_default_label_and_is_range_checked() -> None:
    def grid(topology: dict[str, Any]) -> Any:
        return parse_config({"grid": {"topologies": [topology], "budgets": [100]},
                             "suites": [{"name": "arith"}]}).grid

    assert grid({"name": "single"}).topologies[0].display() == "single"
    assert grid({"name": "single", "temperature": 0}).topologies[0].display() == \
        "single(temperature=0)"
    with pytest.raises(ConfigError, match=r"grid\.topologies\[0\]\.temperature"):
        grid({"name": "single", "temperature": 3})


def test_runs_whose_budget_fit_no_call_are_counted_and_keep_their_design_roles(
        tmp_path: Path) -> None:
    # 8 branches of a 60-token budget: no branch's allowance fits a prompt.
    bo8 = {"name": "best_of_n", "n": 8, "select": "verifier", "label": "bo8"}
    recs = _run(tmp_path / "out", ["single", bo8], [60, 4000])
    starved = [r for r in recs if r.topology == "bo8" and r.budget == 60]
    assert starved and all(r.no_call and r.calls == 0 and r.refused_calls >= 8
                           for r in starved)
    assert not any(r.no_call for r in recs if r.budget == 4000)
    # The design, not the calls made: the starved cell is still solver + verifier.
    assert {r.roles_present for r in recs if r.topology == "bo8"} == {"solver+verifier"}
    assert {r.roles_called for r in starved} == {""}
    assert {r.roles_present for r in recs if r.topology == "single"} == {"solver"}

    with ResultsStore(tmp_path / "out" / "results.sqlite") as rs:
        table = topology_table(rs.frame())
    console = Console(record=True, width=240, color_system=None)
    console.print(table)
    text = console.export_text()
    lines = text.splitlines()
    (starved_line,) = [ln for ln in lines if "bo8" in ln and " 60 " in ln]
    (fed_line,) = [ln for ln in lines if "bo8" in ln and "4,000" in ln]
    assert f"{len(starved)} ({len(starved)} no call)" in starved_line
    assert "no call" not in fed_line
    assert "No call: runs whose budget could not fit" in " ".join(text.split())
