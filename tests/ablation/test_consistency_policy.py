"""``adaptive_consistency`` as a ``[grid] policies`` entry: a voting best-of-N cell runs under
the stopping rule at the same budget, seeds and tasks; other topologies run unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stratagem.ablation import ResultsStore, RunRecord, parse_config, run_ablation
from stratagem.errors import ConfigError


def _sweep(out: Path) -> list[RunRecord]:
    config = parse_config({
        "name": "ac", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": ["single", {"name": "best_of_n", "n": 8, "select": "vote",
                                           "label": "sc8"}],
                 "budgets": [3000], "seeds": [0, 1],
                 "policies": ["uniform", {"name": "adaptive_consistency", "threshold": 0.9,
                                          "label": "ac"}]},
        "suites": [{"name": "arith", "n": 8, "depth": [1, 3]}],
        "simulation": {"skill": 2.0},
        "run": {"concurrency": 4},
    })
    asyncio.run(run_ablation(config))
    with ResultsStore(out / "results.sqlite") as rs:
        return rs.records()


def test_voting_cells_stop_early_under_the_rule_at_the_same_budget(tmp_path: Path) -> None:
    recs = _sweep(tmp_path / "out")
    sc = [r for r in recs if r.topology == "sc8" and r.policy == "uniform"]
    ac = [r for r in recs if r.topology == "sc8" and r.policy == "ac"]
    assert len(sc) == len(ac) == 16
    assert {r.mode for r in sc} == {"best_of_n"} and {r.mode for r in ac} == \
        {"adaptive_consistency"}
    # Same tasks, seeds and allocation: only the stopping rule differs.
    key = lambda r: (r.task_id, r.seed, r.allocated)  # noqa: E731
    assert sorted(map(key, sc)) == sorted(map(key, ac))
    assert {r.calls for r in sc} == {8}
    assert max(r.calls for r in ac) <= 8 and sum(r.calls for r in ac) < sum(r.calls for r in sc)
    assert sum(r.tokens_total for r in ac) < sum(r.tokens_total for r in sc)
    assert all(r.stop_reason.startswith("adaptive consistency") for r in ac)
    # The leader it stops on is the majority answer of the same samples: no accuracy lost
    # where best-of-8's vote was right with a clear majority (planted skill is high here).
    assert sum(bool(r.correct) for r in ac) >= sum(bool(r.correct) for r in sc) - 2
    # Nothing to stop in one sample: single runs as under uniform, to the token.
    def singles(policy: str) -> dict[tuple[str, int], int]:
        return {(r.task_id, r.seed): r.tokens_total for r in recs
                if r.topology == "single" and r.policy == policy}

    assert singles("uniform") == singles("ac") and len(singles("ac")) == 16
    assert {r.mode for r in recs if r.topology == "single"} == {"single"}


def test_its_parameters_are_its_own() -> None:
    def policies(p: object) -> object:
        return parse_config({"grid": {"topologies": ["single"], "budgets": [100],
                                      "policies": [p]}, "suites": [{"name": "arith"}]})

    with pytest.raises(ConfigError, match="adaptive_consistency takes threshold"):
        policies({"name": "adaptive_consistency", "floor": 0.5})
    with pytest.raises(ConfigError, match="uniform takes no parameters, got threshold"):
        policies({"name": "uniform", "threshold": 0.9})
    with pytest.raises(ConfigError, match=r"policies\[0\]\.threshold"):
        policies({"name": "adaptive_consistency", "threshold": 1.5})


def test_two_thresholds_are_two_rules(tmp_path: Path) -> None:
    config = parse_config({
        "name": "ac2", "output": str(tmp_path / "out"), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": [{"name": "best_of_n", "n": 8, "select": "vote"}],
                 "budgets": [3000],
                 "policies": [{"name": "adaptive_consistency", "threshold": t,
                               "label": f"ac{t}"} for t in (0.6, 0.99)]},
        "suites": [{"name": "arith", "n": 6, "depth": [1, 2]}],
        "simulation": {"skill": 2.0},
    })
    asyncio.run(run_ablation(config))
    with ResultsStore(tmp_path / "out" / "results.sqlite") as rs:
        calls = {p: sum(r.calls for r in rs.records() if r.policy == p)
                 for p in ("ac0.6", "ac0.99")}
    assert calls["ac0.6"] < calls["ac0.99"]
