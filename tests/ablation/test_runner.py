"""The ablation runner on the simulated backend: one record per planned run, tokens that add
up to the ledger, matched budgets, tidy exports, resumability after a rerun, a lost record,
Ctrl-C or a crash, and determinism."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from stratagem.ablation import (
    AblationConfig,
    AblationOutcome,
    PlannedRun,
    ResultsStore,
    RunRecord,
    parse_config,
    plan_runs,
    run_ablation,
)
from stratagem.agents import ChatRequest
from stratagem.budgets import LedgerStore
from stratagem.errors import ConfigError
from stratagem.records import RECORD_COLUMNS
from stratagem.simulate import SimEffects, SimulatedModel, sim_tasks
from stratagem.tasks import get_suite

TOPOLOGIES: list[Any] = [
    "single",
    {"name": "best_of_n", "n": 2, "select": "judge", "label": "bo2+judge"},
    "plan_solve",
]
LABELS = ["single", "bo2+judge", "plan_solve"]
BUDGETS = [400, 1600]
POLICIES = ["uniform", "difficulty_adaptive"]
SEEDS = [0, 1]
N_TASKS = 3
ROLES = ("planner", "decomposer", "solver", "judge")

# Fields that describe what a run did; wall time and finish time differ between executions.
OUTCOME_FIELDS = ("correct", "answer", "stop_reason", "tokens_total", "prompt_tokens",
                  "completion_tokens", "tokens_planner", "tokens_solver", "tokens_judge",
                  "accepted_tokens", "waste_tokens", "calls", "transfers", "allocated")


def sim_config(out: Path, **changes: Any) -> AblationConfig:
    """A small simulated grid (3 topologies x 2 budgets x 2 policies x 2 seeds x 3 tasks),
    with top-level tables replaced or merged from ``changes``."""
    data: dict[str, Any] = {
        "name": "runner-test",
        "output": str(out),
        "endpoint": {"backend": "simulated"},
        "grid": {"topologies": TOPOLOGIES, "budgets": BUDGETS, "policies": POLICIES,
                 "seeds": SEEDS},
        "suites": [{"name": "arith", "n": N_TASKS, "depth": [2, 6]}],
        "run": {"concurrency": 4},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


# For tests that execute the grid more than once: 3 topologies x 2 budgets x 3 tasks.
SMALL = {"grid": {"topologies": TOPOLOGIES, "budgets": BUDGETS, "policies": ["uniform"],
                  "seeds": [0]}}


def planned_runs(config: AblationConfig) -> list[PlannedRun]:
    suites = []
    for s in config.suites:
        suite = get_suite(s.name, **s.params())
        suites.append((suite, suite.generate(s.n, seed=s.seed)))
    return plan_runs(config, suites)


def records(out: Path) -> list[RunRecord]:
    with ResultsStore(out / "results.sqlite") as rs:
        return rs.records()


def by_run(recs: Sequence[RunRecord]) -> dict[str, tuple[Any, ...]]:
    return {r.run_id: tuple(getattr(r, f) for f in OUTCOME_FIELDS) for r in recs}


def ledger_rows(out: Path) -> int:
    with LedgerStore(out / "ledger.sqlite") as store:
        return len(store)


def run(config: AblationConfig, **kwargs: Any) -> AblationOutcome:
    return asyncio.run(run_ablation(config, **kwargs))


@dataclass(frozen=True)
class Swept:
    config: AblationConfig
    outcome: AblationOutcome
    planned: list[PlannedRun]
    records: list[RunRecord]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    """The small grid, run once for the read-only tests of this module."""
    config = sim_config(tmp_path_factory.mktemp("swept") / "out")
    outcome = run(config)
    return Swept(config, outcome, planned_runs(config), records(config.output))


# -- planning -------------------------------------------------------------------------------------


def test_the_plan_covers_the_grid_once_with_stable_ids() -> None:
    config = sim_config(Path("unused"))

    plan = planned_runs(config)

    assert len(plan) == len(LABELS) * len(BUDGETS) * len(POLICIES) * len(SEEDS) * N_TASKS
    assert len({p.run_id for p in plan}) == len(plan)
    assert [p.run_id for p in planned_runs(config)] == [p.run_id for p in plan]
    assert {p.cell for p in plan} == {
        f"{t}|{b}|{p}" for t, b, p in product(LABELS, BUDGETS, POLICIES)}


def test_run_ids_do_not_depend_on_the_output_folder_or_the_rest_of_the_grid() -> None:
    small = sim_config(Path("a"), grid={"topologies": ["single"], "budgets": [400]})
    big = sim_config(Path("b"))

    assert {p.run_id for p in planned_runs(small)} <= {p.run_id for p in planned_runs(big)}


# -- one record per run, with the right cells -----------------------------------------------------


def test_one_record_per_planned_run(swept: Swept) -> None:
    assert swept.outcome.planned == len(swept.planned)
    assert (swept.outcome.ran, swept.outcome.skipped, swept.outcome.failed) == (
        len(swept.planned), 0, 0)
    assert not swept.outcome.interrupted
    assert sorted(r.run_id for r in swept.records) == sorted(p.run_id for p in swept.planned)


def test_every_record_carries_its_cell_seed_and_task(swept: Swept) -> None:
    plans = {p.run_id: p for p in swept.planned}
    for r in swept.records:
        plan = plans[r.run_id]
        assert r.cell == f"{r.topology}|{r.budget}|{r.policy}" == plan.cell
        assert (r.topology, r.budget, r.policy, r.seed, r.suite, r.task_id) == (
            plan.topology, plan.budget, plan.policy, plan.seed, plan.suite, plan.task.id)
        assert r.difficulty == plan.task.difficulty
        assert json.loads(r.topology_params) == plan.topology_params
    cells = Counter((r.topology, r.budget, r.policy, r.seed) for r in swept.records)
    assert set(cells) == set(product(LABELS, BUDGETS, POLICIES, SEEDS))
    assert set(cells.values()) == {N_TASKS}


def test_a_topology_label_and_parameters_reach_the_records(swept: Swept) -> None:
    labelled = [r for r in swept.records if r.topology == "bo2+judge"]

    assert labelled
    assert {json.loads(r.topology_params)["n"] for r in labelled} == {2}
    assert {r.mode for r in labelled} == {"best_of_n"}


def test_simulated_records_say_so(swept: Swept) -> None:
    assert swept.outcome.simulated
    assert all(r.simulated and r.backend == "simulated" for r in swept.records)


# -- tokens add up --------------------------------------------------------------------------------


def test_role_tokens_sum_to_the_total(swept: Swept) -> None:
    for r in swept.records:
        assert sum(getattr(r, f"tokens_{role}") for role in ROLES) == r.tokens_total
        assert r.prompt_tokens + r.completion_tokens == r.tokens_total
        assert r.tokens_total > 0
        called = set(r.roles_called.split("+"))
        assert called == {role for role in ROLES if getattr(r, f"tokens_{role}") > 0}


def test_record_totals_equal_the_ledger_for_that_run(swept: Swept) -> None:
    with LedgerStore(swept.config.output / "ledger.sqlite") as store:
        for r in swept.records:
            totals = store.totals(run_id=r.run_id)
            assert totals.total_tokens == r.tokens_total
            assert totals.calls == r.calls == len(store.entries(run_id=r.run_id))
            by_role = store.group_by("role", run_id=r.run_id)
            for role in ROLES:
                assert (by_role[role].total_tokens if role in by_role else 0) == getattr(
                    r, f"tokens_{role}")
            assert len(store.transfers(r.run_id)) == r.transfers
        assert store.totals().total_tokens == sum(r.tokens_total for r in swept.records)


def test_ledger_rows_carry_the_grid_labels(swept: Swept) -> None:
    with LedgerStore(swept.config.output / "ledger.sqlite") as store:
        by_cell = store.group_by("label:cell")
        by_seed = store.group_by("label:seed")

    spent: dict[str, int] = defaultdict(int)
    for r in swept.records:
        spent[r.cell] += r.tokens_total
    assert {cell: t.total_tokens for cell, t in by_cell.items()} == spent
    assert set(by_seed) == {str(s) for s in SEEDS}


def test_waste_is_billed_minus_accepted_and_never_negative(swept: Swept) -> None:
    for r in swept.records:
        assert r.waste_tokens == r.tokens_total - r.accepted_tokens
        assert 0 <= r.waste_tokens <= r.tokens_total


def test_a_run_spends_no_more_than_it_was_allocated(swept: Swept) -> None:
    # Reservations clamp every call to what remains; the simulated backend's prompt counts
    # match the client's estimates, so not even the estimate's error can overshoot here.
    for r in swept.records:
        assert r.tokens_total <= r.allocated, (r.run_id, r.topology, r.stop_reason)


def test_some_planner_budget_moves_are_recorded(swept: Swept) -> None:
    # plan_solve at 400 tokens cannot fit its planner: the planner's share moves to the solver.
    moved = [r for r in swept.records if r.transfers]
    assert moved
    assert {r.topology for r in moved} == {"plan_solve"}


# -- matched budgets ------------------------------------------------------------------------------


def test_every_policy_spends_the_same_batch_total(swept: Swept) -> None:
    batches: dict[tuple[str, int, int, str], list[int]] = defaultdict(list)
    for r in swept.records:
        batches[(r.topology, r.budget, r.seed, r.policy)].append(r.allocated)

    for (_, budget, _, policy), allocated in batches.items():
        assert sum(allocated) == budget * N_TASKS
        if policy == "uniform":
            assert set(allocated) == {budget}


def test_difficulty_adaptive_gives_harder_tasks_more(swept: Swept) -> None:
    adaptive = [r for r in swept.records
                if r.policy == "difficulty_adaptive" and r.topology == "single" and r.seed == 0
                and r.budget == BUDGETS[-1]]
    ranked = sorted(adaptive, key=lambda r: r.difficulty or 0.0)

    assert len({r.difficulty for r in ranked}) > 1
    assert [r.allocated for r in ranked] == sorted(r.allocated for r in ranked)
    assert ranked[0].allocated < ranked[-1].allocated


# -- exports --------------------------------------------------------------------------------------


def test_csv_and_parquet_hold_the_same_rows_as_the_store(swept: Swept) -> None:
    out = swept.config.output
    assert swept.outcome.paths["csv"] == out / "results.csv"
    assert swept.outcome.paths["parquet"] == out / "results.parquet"
    expected = pd.DataFrame([r.model_dump() for r in swept.records]).set_index("run_id")

    for frame in (pd.read_csv(out / "results.csv"), pd.read_parquet(out / "results.parquet")):
        assert list(frame.columns) == list(RECORD_COLUMNS)
        rows = frame.set_index("run_id").loc[expected.index]
        for column in ("cell", "topology", "policy", "task_id", "budget", "allocated", "seed",
                       "correct", "simulated", "tokens_total", "tokens_solver", "tokens_judge",
                       "tokens_planner", "waste_tokens", "calls"):
            assert rows[column].tolist() == expected[column].tolist(), column


def test_the_config_text_is_copied_into_the_output(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", grid={"topologies": ["single"], "budgets": [400],
                                                "policies": ["uniform"], "seeds": [0]})

    run(config, config_text="# my config\n")

    assert (tmp_path / "out" / "config.toml").read_text(encoding="utf-8") == "# my config\n"


def test_progress_is_reported_after_every_run(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", grid={"topologies": ["single"], "budgets": [400],
                                                "policies": ["uniform"], "seeds": [0]})
    seen: list[tuple[int, int]] = []

    run(config, on_progress=lambda done, total: seen.append((done, total)))

    assert seen == [(i, N_TASKS) for i in range(N_TASKS + 1)]


# -- resumability ---------------------------------------------------------------------------------


def test_a_rerun_skips_every_finished_run(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", **SMALL)
    first = run(config)
    rows = ledger_rows(config.output)
    before = by_run(records(config.output))
    progress: list[tuple[int, int]] = []

    again = run(config, on_progress=lambda d, t: progress.append((d, t)))

    assert (again.planned, again.skipped, again.ran) == (first.planned, first.planned, 0)
    assert progress == [(first.planned, first.planned)]
    assert ledger_rows(config.output) == rows
    assert by_run(records(config.output)) == before
    assert (config.output / "results.csv").is_file()


ONE_CELL = {"grid": {"topologies": ["single"], "budgets": [400], "policies": ["uniform"],
                     "seeds": [0]}}


@pytest.mark.parametrize(("changes", "named"), [
    ({"run": {"temperature": 0.3}}, "run.temperature was 0.8, is 0.3"),
    ({"endpoint": {"backend": "simulated", "model": "other"}},
     'endpoints.decomposer.model was null, is "other"'),
    ({"simulation": {"skill": 1.5}}, "simulation.skill was 0.0, is 1.5"),
    ({"suites": [{"name": "arith", "n": N_TASKS, "depth": [2, 6], "few_shot": 2}]},
     "suites (arith).few_shot was 0, is 2"),
    ({"suites": [{"name": "arith", "n": N_TASKS, "depth": 4}]},
     "suites (arith).depth was [2, 6], is 4"),
])
def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(
    tmp_path: Path, changes: dict[str, Any], named: str
) -> None:
    config = sim_config(tmp_path / "out", **ONE_CELL)
    run(config, config_text="# first\n")
    before, rows = by_run(records(config.output)), ledger_rows(config.output)

    changed = sim_config(tmp_path / "out", **ONE_CELL, **changes)
    with pytest.raises(ConfigError, match=re.escape(named)) as caught:
        run(changed, config_text="# second\n")

    assert "new `output` folder" in str(caught.value)
    assert by_run(records(config.output)) == before
    assert ledger_rows(config.output) == rows
    assert (config.output / "config.toml").read_text() == "# first\n"


def test_growing_the_grid_or_adding_a_suite_runs_only_what_is_new(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", **ONE_CELL)
    first = run(config)
    grown = sim_config(
        tmp_path / "out", run={"concurrency": 1, "durable": False},
        grid={"topologies": ["single"], "budgets": [400, 800], "policies": ["uniform"],
              "seeds": [0, 1]},
        suites=[{"name": "arith", "n": N_TASKS, "depth": [2, 6]},
                {"name": "words", "n": 2, "length": "any"}],
    )
    again = run(grown)
    assert again.skipped == first.planned
    assert again.ran == again.planned - first.planned == 4 * (N_TASKS + 2) - N_TASKS


def test_a_folder_from_before_settings_were_recorded_is_accepted(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", **ONE_CELL)
    run(config)
    with sqlite3.connect(config.output / "results.sqlite") as conn:
        conn.execute("DELETE FROM results_meta WHERE key LIKE 'settings:%'")
    changed = sim_config(tmp_path / "out", **ONE_CELL, run={"temperature": 0.3})
    assert run(changed).ran == 0  # nothing to compare with: taken as it is, and recorded
    with pytest.raises(ConfigError, match=re.escape("run.temperature was 0.3, is 0.8")):
        run(config)


def test_labelled_topologies_and_policies_keep_their_parameters(tmp_path: Path) -> None:
    def grid(n: int, exponent: float) -> dict[str, Any]:
        return {"grid": {"topologies": [{"name": "best_of_n", "n": n, "label": "bon"}],
                         "budgets": [800], "seeds": [0], "policies": [
                             {"name": "difficulty_adaptive", "exponent": exponent,
                              "label": "adapt"}]}}

    run(sim_config(tmp_path / "out", **grid(2, 1.0)))
    with pytest.raises(ConfigError, match=re.escape("topology 'bon'.n was 2, is 4")):
        run(sim_config(tmp_path / "out", **grid(4, 1.0)))
    with pytest.raises(ConfigError, match=re.escape("policy 'adapt'.exponent was 1.0, is 3.0")):
        run(sim_config(tmp_path / "out", **grid(2, 3.0)))


def test_a_jsonl_file_edited_in_place_is_a_change_but_its_path_spelling_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": 2}\n{"question": "2 + 2?", "answer": 4}\n')
    monkeypatch.chdir(tmp_path)

    def config(path: str) -> AblationConfig:
        return sim_config(tmp_path / "out", **ONE_CELL,
                          suites=[{"name": "jsonl", "path": path, "n": 2}])

    first = run(config(str(data)))
    assert run(config("mine.jsonl")).skipped == first.planned  # the same file, spelt otherwise
    data.write_text('{"question": "1 + 1?", "answer": 3}\n{"question": "2 + 2?", "answer": 4}\n')
    with pytest.raises(ConfigError, match=r"suites \(mine\)\.tasks was "):
        run(config(str(data)))


def test_settings_of_a_folder_with_no_finished_run_are_replaced(tmp_path: Path) -> None:
    # A first attempt that stopped before any run finished (settings recorded) binds nothing.
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(sim_config(tmp_path / "out", **ONE_CELL), on_progress=stop)
    assert (tmp_path / "out" / "results.sqlite").is_file() and records(tmp_path / "out") == []
    assert run(sim_config(tmp_path / "out", **ONE_CELL, run={"temperature": 0.3})).ran > 0


def test_equivalent_configs_and_settings_a_version_did_not_record_are_accepted(
    tmp_path: Path,
) -> None:
    config = sim_config(tmp_path / "out", **ONE_CELL)
    first = run(config)
    # A role override that is the default endpoint changes nothing.
    same = sim_config(tmp_path / "out", **ONE_CELL, roles={"judge": {"backend": "simulated"}})
    assert run(same).skipped == first.planned
    # A setting the recording version did not know is not a change.
    with sqlite3.connect(config.output / "results.sqlite") as conn:
        (value,) = conn.execute(
            "SELECT value FROM results_meta WHERE key = 'settings:run'").fetchone()
        older = json.loads(value)
        del older["run"]["max_output"]
        conn.execute("UPDATE results_meta SET value = ? WHERE key = 'settings:run'",
                     (json.dumps(older, sort_keys=True),))
    assert run(sim_config(tmp_path / "out", **ONE_CELL, run={"max_output": 99})).skipped \
        == first.planned


def test_a_run_whose_record_was_lost_is_redone_from_its_checkpoint(tmp_path: Path) -> None:
    # A crash after a run's ledger rows but before its record: the run is not done.
    config = sim_config(tmp_path / "out", **SMALL)
    first = run(config)
    before = by_run(records(config.output))
    rows = ledger_rows(config.output)
    with sqlite3.connect(config.output / "results.sqlite") as conn:
        lost = [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY rowid DESC LIMIT 5")]
        conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in lost])
    conn.close()

    again = run(config)

    assert (again.ran, again.skipped) == (len(lost), first.planned - len(lost))
    assert by_run(records(config.output)) == before
    # The finished checkpoints are resumed, not rerun: not one call more.
    assert ledger_rows(config.output) == rows


def _cancel_after(config: AblationConfig, finished: int) -> AblationOutcome:
    """Run ``config`` and cancel it (as Ctrl-C does) once ``finished`` runs are done."""

    async def go() -> AblationOutcome:
        main: asyncio.Future[AblationOutcome] | None = None

        def progress(done: int, total: int) -> None:
            if done >= finished and main is not None:
                main.cancel()

        main = asyncio.ensure_future(run_ablation(config, on_progress=progress))
        return await main

    return asyncio.run(go())


@pytest.mark.parametrize("durable", [True, False])
def test_ctrl_c_stops_cleanly_and_a_rerun_finishes_only_the_rest(
    tmp_path: Path, durable: bool
) -> None:
    config = sim_config(tmp_path / "out", **SMALL, run={"durable": durable})
    planned = planned_runs(config)

    stopped = _cancel_after(config, finished=5)

    assert stopped.interrupted
    assert 5 <= stopped.ran < len(planned)
    assert not (config.output / "results.csv").exists()  # exports wait for a whole sweep
    done_before = {r.run_id for r in records(config.output)}
    assert len(done_before) == stopped.ran

    rest = run(config)

    assert not rest.interrupted
    assert (rest.skipped, rest.ran) == (len(done_before), len(planned) - len(done_before))
    assert rest.failed == 0
    final = records(config.output)
    assert sorted(r.run_id for r in final) == sorted(p.run_id for p in planned)
    with LedgerStore(config.output / "ledger.sqlite") as store:
        for r in final:
            assert r.tokens_total == store.totals(run_id=r.run_id).total_tokens
    assert len(pd.read_csv(config.output / "results.csv")) == len(planned)


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the simulated model's ``call``-th request raise KeyboardInterrupt."""
    real_send = SimulatedModel.send
    count = 0

    async def send(self: SimulatedModel, request: Any) -> Any:
        nonlocal count
        count += 1
        if count == call:
            raise KeyboardInterrupt
        return await real_send(self, request)

    monkeypatch.setattr(SimulatedModel, "send", send)


def test_a_crash_inside_a_model_call_loses_nothing_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not durable: after a KeyboardInterrupt raised inside a task (rather than Ctrl-C, which
    # cancels), the interrupted run's checkpoint connection can keep checkpoints.sqlite
    # locked for a while, and a rerun *in the same process* then records runs as failed
    # ("database is locked"). A real Ctrl-C is covered above and in tests/cli.
    config = sim_config(tmp_path / "out", **SMALL, run={"durable": False, "concurrency": 2})
    planned = planned_runs(config)
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, 20)
        with pytest.raises(KeyboardInterrupt):
            run(config)
    survived = by_run(records(config.output))
    assert 0 < len(survived) < len(planned)

    rest = run(config)

    assert (rest.skipped, rest.ran) == (len(survived), len(planned) - len(survived))
    final = by_run(records(config.output))
    assert len(final) == len(planned)
    assert {k: final[k] for k in survived} == survived  # finished runs are not redone
    assert rest.failed == 0


def _crash_between_supersteps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise KeyboardInterrupt while saving a run's step-0 checkpoint, once the writes of
    the step before it are saved: the moment a Ctrl-C often lands in a busy sweep."""
    real_aput = AsyncSqliteSaver.aput

    async def aput(self: AsyncSqliteSaver, config: Any, checkpoint: Any, metadata: Any,
                   new_versions: Any) -> Any:
        if metadata.get("step") == 0:
            thread = config["configurable"]["thread_id"]
            for _ in range(200):
                async with self.conn.execute(
                        "SELECT COUNT(*) FROM writes WHERE thread_id = ?", (thread,)) as cur:
                    row = await cur.fetchone()
                if row and row[0]:
                    break
                await asyncio.sleep(0.01)
            raise KeyboardInterrupt
        return await real_aput(self, config, checkpoint, metadata, new_versions)

    monkeypatch.setattr(AsyncSqliteSaver, "aput", aput)


def test_a_run_interrupted_between_supersteps_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = {"topologies": [TOPOLOGIES[1]], "budgets": [1600], "policies": ["uniform"],
            "seeds": [0]}
    single_run = {"grid": grid, "suites": [{"name": "arith", "n": 1}], "run": {"concurrency": 1}}
    clean = sim_config(tmp_path / "clean", **single_run)
    crashed = sim_config(tmp_path / "crashed", **single_run)
    run(clean)
    with monkeypatch.context() as patch:
        _crash_between_supersteps(patch)
        with pytest.raises(KeyboardInterrupt):
            run(crashed)
    assert records(crashed.output) == []

    resumed = run(crashed)

    assert resumed.ran == 1
    (expected,), (got,) = records(clean.output), records(crashed.output)
    assert got.calls > 0
    assert by_run([got]) == by_run([expected])


# -- determinism and durability -------------------------------------------------------------------


def test_the_same_config_gives_the_same_results_in_two_folders(tmp_path: Path,
                                                               swept: Swept) -> None:
    again = sim_config(tmp_path / "again")
    assert [p.run_id for p in planned_runs(again)] == [p.run_id for p in swept.planned]

    run(again)

    assert by_run(records(again.output)) == by_run(swept.records)


def test_durable_false_writes_no_checkpoints_and_still_resumes(tmp_path: Path,
                                                               swept: Swept) -> None:
    config = sim_config(tmp_path / "out", run={"durable": False})

    first = run(config)
    again = run(config)

    assert first.ran == len(swept.planned)
    assert not (config.output / "checkpoints.sqlite").exists()
    assert by_run(records(config.output)) == by_run(swept.records)
    assert (again.skipped, again.ran) == (len(swept.planned), 0)


def test_durable_runs_checkpoint_every_run(swept: Swept) -> None:
    with sqlite3.connect(swept.config.output / "checkpoints.sqlite") as conn:
        threads = {r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")}
    conn.close()
    assert threads == {p.run_id for p in swept.planned}


# -- configs that cannot run ----------------------------------------------------------------------


def _nothing_ran(out: Path) -> bool:
    if not (out / "results.sqlite").exists():
        return True
    return records(out) == [] and ledger_rows(out) == 0


@pytest.mark.parametrize(("suites", "named"), [
    ([{"name": "arith", "n": 2, "deph": 3}], "'deph'"),
    ([{"name": "nosuch", "n": 2}], "'nosuch'"),
    ([{"name": "words", "n": 30, "length": "any", "letters": "ab", "few_shot": 1}],
     r"suites\[0\]\.few_shot: suite 'words' can give only 0 of the 1 few-shot examples"),
    ([{"name": "arith", "n": 2}, {"name": "words", "n": 2},
      {"name": "words", "n": 2, "letters": "abcd"}],
     r"suites\[1\] and suites\[2\] are both the suite 'words'"),
])
def test_a_bad_suite_is_a_config_error_before_anything_runs(
    tmp_path: Path, suites: list[dict[str, Any]], named: str
) -> None:
    config = sim_config(tmp_path / "out", suites=suites)

    with pytest.raises(ConfigError, match=named):
        run(config)
    assert _nothing_ran(config.output)


def test_a_remote_endpoint_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    # Refused when the config loads, with the field path: no folder is ever made.
    with pytest.raises(ConfigError, match=r"endpoint: model: a model name is required"):
        sim_config(tmp_path / "out", endpoint={"backend": "openai"})
    with pytest.raises(ConfigError, match=r"roles.judge: model: a model name is required"):
        sim_config(tmp_path / "out", roles={"judge": {"backend": "vllm"}})
    assert not (tmp_path / "out").exists()


BAD_TOPOLOGY = {"topologies": ["single", {"name": "best_of_n", "m": 4}], "budgets": [400],
                "policies": ["uniform"], "seeds": [0]}


def test_a_bad_topology_parameter_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", grid=BAD_TOPOLOGY)

    with pytest.raises(ConfigError, match=r"best_of_n.*'m'"):
        run(config)


def test_a_bad_topology_parameter_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "out", grid=BAD_TOPOLOGY, run={"concurrency": 1})

    with pytest.raises(ConfigError, match=r"grid\.topologies\[1\]"):
        run(config)
    assert _nothing_ran(config.output)


def test_run_records_validate_what_they_hold(swept: Swept) -> None:
    data = swept.records[0].model_dump()

    assert RunRecord.model_validate(data) == swept.records[0]
    with pytest.raises(ValueError, match="extra"):
        RunRecord.model_validate({**data, "unknown_column": 1})


def test_runs_that_lost_model_calls_are_counted_not_hidden(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint outage does not make runs raise (the graphs absorb a lost call), but
    the outcome and every record say how many calls each run lost."""
    from stratagem.agents import build_backend
    from stratagem.errors import ModelError

    class Outage:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        async def send(self, request: Any) -> Any:
            raise ModelError("HTTP 401: the endpoint refused the key", status_code=401)

    # The runner's seam, replaced by name (tests never import private modules).
    monkeypatch.setattr("stratagem.ablation._runner.build_backend",
                        lambda *a, **k: Outage(build_backend(*a, **k)))
    config = sim_config(tmp_path / "out", **SMALL)
    total = len(planned_runs(config))
    outcome = run(config)
    assert (outcome.ran, outcome.failed, outcome.lost_calls) == (total, 0, total)
    assert all(r.failed_calls >= 1 and not r.correct for r in records(tmp_path / "out"))


def test_few_shot_examples_reach_every_solver_call_and_no_run_is_its_own_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[dict[str, Any]]] = []
    send = SimulatedModel.send

    async def recording(self: SimulatedModel, request: Any) -> Any:
        if request.role == "solver":
            seen.append([dict(m) for m in request.messages])
        return await send(self, request)

    monkeypatch.setattr(SimulatedModel, "send", recording)
    grid = {"topologies": ["single", {"name": "best_of_n", "n": 2, "select": "verifier"}],
            "budgets": [1600], "policies": ["uniform"], "seeds": [0]}
    suite = {"name": "arith", "n": 4, "depth": [1, 3], "few_shot": 2}
    # A simulator this skilled answers the task it resolves correctly every time.
    config = sim_config(tmp_path / "shots", grid=grid, suites=[suite],
                        run={"judge_with": "verifier"}, simulation={"skill": 30.0})
    outcome = run(config)
    assert outcome.failed == 0

    arith = get_suite("arith", depth=[1, 3])
    questions = {t.question for t in arith.generate(4, seed=0)}
    examples = arith.demonstrations(2, exclude=questions, seed=0)
    assert seen and len(seen) >= len(records(config.output))
    for messages in seen:
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user",
                                                 "assistant", "user"]
        shown = [(messages[i]["content"], messages[i + 1]["content"]) for i in (1, 3)]
        assert [a for _, a in shown] == [reply for _, reply in examples]
        assert all(q in text for (q, _), (text, _) in zip(examples, shown, strict=True))
        assert sum(q in messages[-1]["content"] for q in questions) == 1

    # The simulator answers the task asked, not an example (whose gold answers differ).
    with_shots = records(config.output)
    assert all(r.correct for r in with_shots), [r.answer for r in with_shots]
    # The examples are billed: the same runs without them send fewer prompt tokens.
    plain = sim_config(tmp_path / "plain", grid=grid, suites=[{**suite, "few_shot": 0}],
                       run={"judge_with": "verifier"}, simulation={"skill": 30.0})
    run(plain)
    without = records(plain.output)
    assert sum(r.prompt_tokens for r in with_shots) > sum(r.prompt_tokens for r in without)


def test_the_simulator_answers_the_last_question_when_an_example_is_also_one_of_its_tasks(
) -> None:
    shown, asked = "Start with 2. Add 5. What is the result?", "What is 3 + 6?"
    model = SimulatedModel(sim_tasks([(shown, "7", 0.0), (asked, "9", 0.0)]),
                           SimEffects(skill=30.0))
    request = ChatRequest(
        messages=[{"role": "user", "content": shown},
                  {"role": "assistant", "content": "Answer: 7"},
                  {"role": "user", "content": asked}],
        model="sim", max_output=64, role="solver", node="solver",
    )
    reply = asyncio.run(model.send(request))
    assert reply.text.endswith("Answer: 9")


def test_the_runner_hands_every_row_and_transfer_to_a_callback(tmp_path: Path) -> None:
    from stratagem.budgets import CallRecorded, TransferRecorded

    events: list[object] = []
    config = sim_config(tmp_path / "out", **SMALL, run={"reallocation": "judge_feedback"})
    asyncio.run(run_ablation(config, on_event=events.append))
    with LedgerStore(tmp_path / "out" / "ledger.sqlite") as store:
        rows, moves = store.entries(), store.transfers()
    assert [e.entry for e in events if isinstance(e, CallRecorded)] == rows
    assert [e.transfer for e in events if isinstance(e, TransferRecorded)] == moves


def test_run_judge_with_reaches_the_topologies_that_judge(tmp_path: Path) -> None:
    # [run] judge_with = "verifier": refine critiques with the task's checker (no judge call),
    # unless the topology's own table says otherwise.
    grid = {"topologies": [{"name": "refine", "max_rounds": 2},
                           {"name": "refine", "max_rounds": 2, "judge_with": "llm",
                            "label": "refine+llm"}],
            "budgets": [1600], "policies": ["uniform"], "seeds": [0]}
    config = sim_config(tmp_path / "out", grid=grid, run={"judge_with": "verifier"})
    assert run(config).failed == 0
    by_topology: dict[str, list[RunRecord]] = {}
    for r in records(config.output):
        by_topology.setdefault(r.topology, []).append(r)
    verified, judged = by_topology["refine(max_rounds=2)"], by_topology["refine+llm"]
    assert all(r.tokens_judge == 0 and r.roles_present == "solver+verifier" for r in verified)
    assert all(r.roles_present == "solver+judge" for r in judged)
    assert sum(r.tokens_judge for r in judged) > 0


def test_two_judges_of_one_grid_score_the_same_candidates(tmp_path: Path) -> None:
    grid = {"topologies": [
        {"name": "best_of_n", "n": 3, "select": "judge", "label": "reasoning"},
        {"name": "best_of_n", "n": 3, "select": "judge", "judge": "outcome",
         "label": "outcome"}], "budgets": [3000], "policies": ["uniform"], "seeds": [0, 1]}
    config = sim_config(tmp_path / "out", grid=grid, run={"split": {"solver": 0.5,
                                                                   "judge": 0.5}})
    assert run(config).failed == 0
    digests: dict[tuple[str, int], set[str]] = {}
    for r in records(config.output):
        assert r.candidates
        digests.setdefault((r.task_id, r.seed), set()).add(r.candidates)
    assert len(digests) == 6 and all(len(d) == 1 for d in digests.values())
    # Different seeds sample different candidates: the digest is not a constant.
    assert len({next(iter(d)) for d in digests.values()}) > 1
    assert all(r.tokens_judge > 0 for r in records(config.output))
