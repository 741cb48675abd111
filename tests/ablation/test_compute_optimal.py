"""``compute_optimal`` in ``[grid] policies`` on the simulated backend: a calibration split
drawn apart from the evaluated tasks, fitted once and saved next to the results, reused; a
choice per query recorded in the ledger with its reason; and the planted difficulty found."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import ResultsStore, RunRecord, parse_config, run_ablation
from stratagem.budgets import CalibrationTable, LedgerStore

BO8 = {"name": "best_of_n", "n": 8, "select": "verifier", "label": "bo8"}


def _config(out: Path, **policy: Any) -> Any:
    return parse_config({
        "name": "co", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": [BO8], "budgets": [1600], "seeds": [0, 1],
                 "policies": ["uniform", {"name": "compute_optimal", "label": "co",
                                          "calibration": 24, "samples": [2, 4, 8],
                                          **policy}]},
        # Difficulty varies by construction (depth 1 to 6) and the planted model fails
        # deep chains: the probe's first sample is the signal to find.
        "suites": [{"name": "arith", "n": 16, "depth": [1, 6]}],
        "simulation": {"skill": 0.5, "difficulty_weight": 6.0, "token_weight": 0.0},
        "run": {"concurrency": 4, "split": {"solver": 1.0}},
    })


def _records(out: Path) -> list[RunRecord]:
    with ResultsStore(out / "results.sqlite") as rs:
        return rs.records()


def test_it_calibrates_apart_chooses_per_query_and_records_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(out)
    asyncio.run(run_ablation(config))
    (saved,) = out.glob("calibration-*.json")
    table = CalibrationTable.load(saved)
    recs = _records(out)
    evaluated = {r.task_id for r in recs}
    questions = set(json.loads(saved.read_text())["meta"]["questions"])
    assert table.queries == 24 * 2 and len(questions) == 24
    with LedgerStore(out / "ledger.sqlite") as store:
        # Calibration tasks are drawn apart: none is an evaluated question.
        ev_questions = {e.labels.get("task") for e in store.entries()
                        if e.labels.get("phase") != "calibration"}
        cal_rows = [e for e in store.entries() if e.labels.get("phase") == "calibration"]
        transfers = store.transfers()
    assert cal_rows and ev_questions == evaluated
    co = [r for r in recs if r.policy == "co"]
    assert len(co) == 32 and all(r.transfers == 1 for r in co)
    choices = [t for t in transfers if t.from_role == "policy"]
    assert len(choices) == 32
    assert all(t.reason.startswith("compute_optimal: probe ") for t in choices)
    assert {r.mode for r in co} <= set(table.options)

    # The planted signal: a verified first sample means stop, so those queries cost one
    # sample; the policy spends its tokens on queries whose probe failed.
    stopped = [r for r in co if r.calls == 1]
    went_on = [r for r in co if r.calls > 1]
    assert stopped and went_on
    assert all(r.correct for r in stopped)
    uni = [r for r in recs if r.policy == "uniform"]
    assert sum(r.tokens_total for r in co) < 0.6 * sum(r.tokens_total for r in uni)
    # In expectation at the batch's total (tokens per query at most the budget, here).
    assert sum(r.tokens_total for r in co) / len(co) <= 1600

    # Rerun in a new folder holding the table: it is reused, nothing calibrates again.
    again = tmp_path / "again"
    again.mkdir()
    (again / saved.name).write_bytes(saved.read_bytes())
    asyncio.run(run_ablation(_config(again)))
    with LedgerStore(again / "ledger.sqlite") as store:
        assert not [e for e in store.entries() if e.labels.get("phase") == "calibration"]
    assert [(r.run_id, r.mode) for r in sorted(_records(again), key=lambda r: r.run_id)] == \
        [(r.run_id, r.mode) for r in sorted(recs, key=lambda r: r.run_id)]


def test_the_table_learns_that_a_failed_probe_predicts_failure() -> None:
    from stratagem.budgets import PoolSample

    def pool(pattern: str) -> list[PoolSample]:
        return [PoolSample(str(i), c == "1", 50) for i, c in enumerate(pattern)]

    # Easy queries pass the probe; hopeless ones never pass; some pass late.
    pools = [pool("11111111")] * 10 + [pool("00000000")] * 10 + [pool("00010000")] * 5
    table = CalibrationTable.fit(pools, probe=1, samples=(2, 4, 8), verifier=True)
    assert set(table.cells) == {"verified", "agree1/1"}
    acc_stop, _ = table.expected("agree1/1", "stop")
    acc_seq, tokens_seq = table.expected("agree1/1", "sequential:8")
    assert acc_stop < 0.15 < acc_seq and tokens_seq > 200
    assert table.best("verified", price=0.0).option == "stop"
    assert table.best("agree1/1", price=0.0).option in ("sequential:4", "sequential:8")
    assert table.best("agree1/1", price=0.01).option == "stop"   # tokens too dear
    # The price meets a budget in expectation over the calibration mix.
    price = table.price_for(100.0)
    assert table.mean_tokens(price) <= 100.0 < table.mean_tokens(0.0)
    assert CalibrationTable.from_json(table.to_json()) == table


def _choices(out: Path) -> dict[str, set[str]]:
    """The options chosen per probe bin, read off the ledger's recorded reasons."""
    with LedgerStore(out / "ledger.sqlite") as store:
        reasons = [t.reason for t in store.transfers() if t.from_role == "policy"]
    chosen: dict[str, set[str]] = {}
    for reason in reasons:
        _, probe, option = reason.split(": ")[:3]
        chosen.setdefault(probe.removeprefix("probe "), set()).add(option.split(" ")[0])
    return chosen


def _signal_config(out: Path, signal: str) -> Any:
    # Hard enough that many probes fail; the simulator plants a mean token log-probability
    # that falls with the planted chance of success (SimEffects.logprob_weight).
    return parse_config({
        "name": "co", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": [BO8], "budgets": [400], "seeds": [0, 1],
                 "policies": [{"name": "compute_optimal", "label": "co", "calibration": 32,
                               "samples": [2, 4, 8], "probe_signal": signal}]},
        "suites": [{"name": "arith", "n": 16, "depth": [1, 6]}],
        "simulation": {"skill": -1.5, "difficulty_weight": 6.0, "token_weight": 0.0},
        "run": {"concurrency": 4, "split": {"solver": 1.0}},
    })


def test_a_planted_logprob_signal_is_found_and_changes_the_choices(tmp_path: Path) -> None:
    out = tmp_path / "lp"
    asyncio.run(run_ablation(_signal_config(out, "logprob")))
    (saved,) = out.glob("calibration-*.json")
    table = CalibrationTable.load(saved)
    assert table.signal == "logprob" and len(table.edges) == 2
    assert json.loads(saved.read_text())["edges"] == table.edges
    assert set(table.cells) == {"verified", "lp1/3", "lp2/3", "lp3/3"}
    # Terciles of the unverified probes: a third of them in each bin.
    sizes = [table.cells[b]["stop"][1] for b in ("lp1/3", "lp2/3", "lp3/3")]
    assert max(sizes) - min(sizes) <= 1
    # The planted direction: the more confident the failed probe, the likelier more samples
    # find an accepted answer.
    low, _ = table.expected("lp1/3", "sequential:8")
    high, _ = table.expected("lp3/3", "sequential:8")
    assert high > low + 0.15
    # And the policy acts on it: different options for different bins of the same kind of
    # probe (all failed), which one bin for every failed probe could not give.
    chosen = _choices(out)
    assert chosen["verified"] == {"stop"}
    failed = {b: c for b, c in chosen.items() if b.startswith("lp")}
    assert len(failed) >= 2 and len(set().union(*failed.values())) >= 2
    assert all(len(c) == 1 for c in failed.values())  # one bin, one choice

    # Ignoring the signal (agreement, probe = 1): every failed probe lands in one bin.
    plain = tmp_path / "agreement"
    asyncio.run(run_ablation(_signal_config(plain, "agreement")))
    assert {b for b in _choices(plain) if b != "verified"} == {"agree1/1"}


def test_logprob_bins_are_fitted_saved_and_unknown_is_not_a_value() -> None:
    from stratagem.budgets import PoolSample

    def pool(pattern: str, lp: float | None) -> list[PoolSample]:
        return [PoolSample(str(i), c == "1", 50, lp) for i, c in enumerate(pattern)]

    # Confident failed probes pass soon after; unsure ones never do.
    pools = ([pool("01111111", -0.1)] * 6 + [pool("00000000", -2.0)] * 6
             + [pool("00010000", -1.0)] * 6 + [pool("11111111", -3.0)] * 4)
    table = CalibrationTable.fit(pools, probe=1, samples=(2, 4, 8), verifier=True,
                                 signal="logprob")
    # Edges from the 18 unverified probes only (the verified ones at -3.0 are not counted).
    assert table.edges == [-1.0, -0.1]
    assert set(table.cells) == {"verified", "lp1/3", "lp2/3", "lp3/3"}
    assert table.expected("lp3/3", "sequential:2")[0] > 0.8
    assert table.expected("lp1/3", "sequential:8")[0] < 0.2
    assert table.best("lp3/3", price=3e-3).option.startswith("sequential:")
    assert table.best("lp1/3", price=3e-3).option == "stop"
    assert CalibrationTable.from_json(table.to_json()) == table
    # A probe without log-probabilities is in bin lp?, not in the least confident bin.
    assert table.bin_for(["x"], [False], [None]) == "lp?"
    assert table.bin_for(["x"], [False], [-5.0]) == "lp1/3"
    both = CalibrationTable.fit(pools, probe=2, samples=(4, 8), verifier=True, signal="both")
    assert {b.split(",")[0] for b in both.cells if b != "verified"} <= {"agree1/2", "agree2/2"}


def test_probe_signal_is_validated_in_the_config_and_the_policy() -> None:
    from stratagem.budgets import ComputeOptimal
    from stratagem.errors import ConfigError

    with pytest.raises(ConfigError, match="probe_signal must be one of"):
        ComputeOptimal(probe_signal="vibes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="logprob_bins"):
        ComputeOptimal(logprob_bins=0)
    with pytest.raises(ConfigError, match="stop included"):
        ComputeOptimal(options=("sequential", "decompose"))
    with pytest.raises(ConfigError, match="refine rounds"):
        ComputeOptimal(options=("stop", "refine"), rounds=(0,))
    with pytest.raises(ConfigError):
        _config(Path("unused"), options=["stop", "tree"])
    assert ComputeOptimal(options=("stop", "refine", "decompose"), rounds=(3, 1)) \
        .run_options() == ["refine:1", "refine:3", "decompose"]
    assert ComputeOptimal().run_options() == []  # opt-in: the default runs nothing more
    with pytest.raises(ConfigError):
        _config(Path("unused"), probe_signal="vibes")
    with pytest.raises(ConfigError, match="difficulty_adaptive takes"):
        parse_config({"name": "x", "endpoint": {"backend": "simulated"},
                      "grid": {"topologies": ["single"], "budgets": [100], "seeds": [0],
                               "policies": [{"name": "difficulty_adaptive",
                                             "probe_signal": "logprob"}]},
                      "suites": [{"name": "arith", "n": 2}]})
    built = _config(Path("unused"), probe_signal="both", logprob_bins=4).grid.policies[1]
    assert built.build() == ComputeOptimal(calibration=24, probe_signal="both",
                                           logprob_bins=4)


def _options_config(out: Path, **simulation: float) -> Any:
    # Hard tasks (most probes fail) and a budget that fits any option: the choice goes to
    # what the calibration found most accurate in the failed-probe bin.
    return parse_config({
        "name": "co", "output": str(out), "endpoint": {"backend": "simulated"},
        "grid": {"topologies": [BO8], "budgets": [1000], "seeds": [0, 1],
                 "policies": [{"name": "compute_optimal", "label": "co", "calibration": 24,
                               "samples": [2, 4, 8], "rounds": [2],
                               "options": ["stop", "sequential", "refine", "decompose"]}]},
        "suites": [{"name": "arith", "n": 16, "depth": [1, 6]}],
        "simulation": {"skill": -3.0, "difficulty_weight": 6.0, "token_weight": 0.0,
                       **simulation},
        "run": {"concurrency": 4, "split": {"solver": 1.0}},
    })


def _evaluated_choices(out: Path) -> dict[str, set[str]]:
    """Options chosen per bin in the evaluated runs (calibration's forced runs left out)."""
    with LedgerStore(out / "ledger.sqlite") as store:
        reasons = [t.reason for t in store.transfers()
                   if t.from_role == "policy" and "(forced" not in t.reason]
    chosen: dict[str, set[str]] = {}
    for reason in reasons:
        _, probe, option = reason.split(": ")[:3]
        chosen.setdefault(probe.removeprefix("probe "), set()).add(option.split(" ")[0])
    return chosen


def test_decompose_is_chosen_where_the_planted_bonus_makes_it_pay(tmp_path: Path) -> None:
    helps = tmp_path / "helps"
    asyncio.run(run_ablation(_options_config(helps, decompose_bonus=6.0, feedback_bonus=0.0)))
    (saved,) = helps.glob("calibration-*.json")
    table = CalibrationTable.load(saved)
    assert table.options == ["stop", "sequential:2", "sequential:4", "sequential:8",
                             "refine:2", "decompose"]
    assert table.run_options == ["refine:2", "decompose"]
    # Run, not read off the pool: on every calibration query whose probe failed, billed to
    # the calibration (label phase) with the option named on every row.
    failed = table.cells["agree1/1"]["stop"][1]
    with LedgerStore(helps / "ledger.sqlite") as store:
        rows = [e for e in store.entries() if e.labels.get("phase") == "calibration"]
    decomposed = {e.run_id for e in rows if e.labels.get("option") == "decompose"}
    assert len(decomposed) == failed and table.cells["agree1/1"]["decompose"][1] == failed
    assert {e.role for e in rows if e.labels.get("option") == "decompose"} >= {
        "decomposer", "solver"}
    assert table.cells["agree1/1"]["decompose"][2] / failed == pytest.approx(
        sum(e.total_tokens for e in rows if e.run_id in decomposed) / failed)
    acc_dec, _ = table.expected("agree1/1", "decompose")
    acc_seq, _ = table.expected("agree1/1", "sequential:8")
    assert acc_dec > acc_seq + 0.15
    assert _evaluated_choices(helps) == {"verified": {"stop"}, "agree1/1": {"decompose"}}
    recs = _records(helps)
    went = [r for r in recs if r.mode == "decompose"]
    assert went and sum(r.correct for r in went) / len(went) > 0.8
    # The design of the cell is what its table may choose (attribution encodes it so).
    assert {r.roles_present for r in recs} == {"decomposer+solver+verifier"}

    useless = tmp_path / "useless"
    asyncio.run(run_ablation(_options_config(useless, decompose_bonus=0.0,
                                             feedback_bonus=0.0)))
    chosen = _evaluated_choices(useless)
    assert "decompose" not in set().union(*chosen.values())
    assert not [r for r in _records(useless) if r.mode == "decompose"]


def test_refine_is_chosen_where_the_planted_feedback_bonus_makes_it_pay(
        tmp_path: Path) -> None:
    out = tmp_path / "refine"
    asyncio.run(run_ablation(_options_config(out, decompose_bonus=0.0, feedback_bonus=6.0)))
    assert _evaluated_choices(out) == {"verified": {"stop"}, "agree1/1": {"refine:2"}}
    refined = [r for r in _records(out) if r.mode == "refine:2"]
    assert refined and sum(r.correct for r in refined) / len(refined) > 0.8
    # Each run revised the probe's answer (solver calls past the probe, no more samples).
    assert all(r.calls >= 2 for r in refined)
