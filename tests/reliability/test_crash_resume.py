"""Crash-resume: a durable run killed with SIGKILL at 20 random points resumes each time to
the uninterrupted run's result, with no lost and no duplicated ledger rows.

Each trial starts a fresh run in a child process (``_crash_child.py``) whose model kills the
process at a randomly chosen call (after a random short delay, so sibling branches progress
and checkpoint writes are in flight). Some trials resume in a second child that is killed
again. A final in-process resume finishes the run. Every process uses the same deterministic
model, so the run is compared with an uninterrupted run of the same topology.

What must be equal, precisely (a call whose row is in the ledger but whose superstep was not
checkpointed is replayed from the ledger on resume, never asked again, so billing does not
grow):

* the outcome: answer, stop reason, score, and the *accepted* tokens per role;
* the accepted calls: each is one ledger row, and their tokens sum to the accepted tokens;
* the billed ledger, as a multiset of calls ``(role, node, branch, prompt, completion)``:
  exactly the uninterrupted run's multiset (no call made twice);
* no lost or duplicated rows: call ids are unique, every row present after a kill is still
  there unchanged at the end, and every call the model served (its ``served.log``, across
  all processes) has exactly one row;
* the rebuilt budget has spent exactly what the run's rows say.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stratagem.budgets import LedgerEntry, LedgerStore
from stratagem.graphs import RunResult

CHILD = Path(__file__).with_name("_crash_child.py")
KILL_POINTS = 20
SEED = 20_260_000  # of the kill points: a failure names its trial, and it reproduces


@pytest.fixture(scope="module")
def child() -> Iterator[types.ModuleType]:
    """``_crash_child.py`` imported here, for the baseline and the final resumes."""
    spec = importlib.util.spec_from_file_location("stratagem_reliability_crash_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@dataclass
class Trial:
    index: int
    topology: str
    kills: list[tuple[int, float]]  # (call index within the process, delay before the kill)
    folder: Path = Path()
    after_kill: list[list[LedgerEntry]] = field(default_factory=list)


def _trials(calls: dict[str, int]) -> list[Trial]:
    """20 kill points over 16 trials: 12 killed once, 4 killed again while resuming (at the
    resumed process's first call, the only one it is sure to make)."""
    rng = random.Random(SEED)
    trials = []
    for i in range(16):
        topology = ("best_of_n", "refine")[i % 2]
        kills = [(rng.randint(1, calls[topology]), rng.uniform(0.0, 0.03))]
        if i < 4:
            kills.append((1, rng.uniform(0.0, 0.03)))
        trials.append(Trial(i, topology, kills))
    assert sum(len(t.kills) for t in trials) == KILL_POINTS
    return trials


def _rows(folder: Path) -> list[LedgerEntry]:
    with LedgerStore(folder / "ledger.sqlite") as store:
        return store.entries()


def _kill_chain(trial: Trial) -> Trial:
    """Run the trial's child processes; each must die by SIGKILL. Snapshot after each."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    for n, (kill_at, delay) in enumerate(trial.kills):
        mode = "run" if n == 0 else "resume"
        proc = subprocess.run(
            [sys.executable, str(CHILD), str(trial.folder), trial.topology, mode, str(kill_at),
             f"{delay:.4f}"],
            capture_output=True, text=True, timeout=60, check=False, env=env,
            cwd=trial.folder,
        )
        assert proc.returncode == -signal.SIGKILL, (
            f"trial {trial.index} ({trial.topology}, kill {n}): exit {proc.returncode}\n"
            f"{proc.stdout[-500:]}{proc.stderr[-3000:]}")
        trial.after_kill.append(_rows(trial.folder))
    return trial


def _served(folder: Path) -> list[dict[str, object]]:
    path = folder / "served.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _calls(rows: Sequence[LedgerEntry]) -> Counter[tuple[object, ...]]:
    return Counter((r.role, r.node, r.branch, r.prompt_tokens, r.completion_tokens)
                   for r in rows)


def _check(trial: Trial, result: RunResult, rows: Sequence[LedgerEntry],
           base: RunResult, base_rows: Sequence[LedgerEntry]) -> int:
    """All the equalities of the module docstring; returns the re-executed calls."""
    where = f"trial {trial.index} ({trial.topology}, kills {trial.kills})"
    # The outcome is the uninterrupted run's.
    assert (result.answer, result.stop_reason, result.score) == (
        base.answer, base.stop_reason, base.score), where
    assert result.accepted_tokens == base.accepted_tokens, where
    # No duplicated and no lost rows.
    ids = [r.call_id for r in rows]
    assert len(ids) == len(set(ids)), f"{where}: a call id recorded twice"
    final = {r.call_id: r for r in rows}
    for snapshot in trial.after_kill:
        for r in snapshot:
            assert final.get(r.call_id) == r, f"{where}: row {r.call_id} lost or changed"
    assert all(r.status == "ok" and r.run_id == result.run_id for r in rows), where
    # Every call the model served is in the ledger exactly once (and nothing else is).
    served = _served(trial.folder)
    assert len(served) == len(rows), f"{where}: {len(served)} served, {len(rows)} rows"
    assert Counter((s["role"], s["node"]) for s in served) == Counter(
        (r.role, r.node) for r in rows), where
    # The accepted calls are rows, once each, and add up to the accepted tokens.
    accepted = result.state["accepted_calls"]
    assert len(accepted) == len(set(accepted)), f"{where}: a call accepted twice"
    per_role: Counter[str] = Counter()
    for cid in accepted:
        assert cid in final, f"{where}: accepted call {cid} has no ledger row"
        per_role[final[cid].role] += final[cid].total_tokens
    assert dict(per_role) == result.accepted_tokens, where
    # Billing: exactly the uninterrupted run's calls (recorded ones were replayed).
    got, want = _calls(rows), _calls(base_rows)
    assert not want - got, f"{where}: calls of the uninterrupted run are missing: {want - got}"
    assert not got - want, f"{where}: calls made twice or never made before: {got - want}"
    assert result.billed.total_tokens == base.billed.total_tokens, where
    assert result.billed.total_tokens == sum(r.total_tokens for r in rows), where
    return sum((got - want).values())


@pytest.mark.slow
def test_sigkill_at_20_random_points_resumes_to_the_uninterrupted_result(
    child: types.ModuleType, tmp_path: Path,
) -> None:
    # The uninterrupted baselines, in this process.
    baselines: dict[str, tuple[RunResult, list[LedgerEntry]]] = {}
    for topology in child.TOPOLOGIES:
        folder = tmp_path / f"baseline-{topology}"
        folder.mkdir()
        result = child.execute(str(folder), topology, "run",
                               child.make_model(str(folder / "served.log")))
        rows = _rows(folder)
        assert len(rows) == child.CALLS[topology] == len(_served(folder)), topology
        assert result.stop_reason in ("done", "accepted by the judge"), result.stop_reason
        baselines[topology] = (result, rows)
    assert baselines["refine"][0].answer == "45" and baselines["best_of_n"][0].answer == "44"

    trials = _trials(child.CALLS)
    for t in trials:
        t.folder = tmp_path / f"trial-{t.index:02d}"
        t.folder.mkdir()
    # Two children at a time (two cores); each chain of kills runs in order.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(_kill_chain, trials))

    kills, redone_total = 0, 0
    for trial in done:
        kills += len(trial.kills)
        budget = child.fresh_budget()
        result = child.execute(str(trial.folder), trial.topology, "resume",
                               child.make_model(str(trial.folder / "served.log")), budget)
        rows = _rows(trial.folder)
        base, base_rows = baselines[trial.topology]
        redone_total += _check(trial, result, rows, base, base_rows)
        # The rebuilt budget counts what the crashed processes spent, once.
        assert budget.spent() == sum(r.total_tokens for r in rows), trial.index
        assert budget.reserved() == 0
    assert kills == KILL_POINTS
    assert redone_total == 0, "a resume asked the model again for a call it had recorded"
    # Resuming a finished run changes nothing and calls nobody.
    last = done[-1]
    before, served = _rows(last.folder), len(_served(last.folder))
    again = child.execute(str(last.folder), last.topology, "resume",
                          child.make_model(str(last.folder / "served.log")))
    assert _rows(last.folder) == before and len(_served(last.folder)) == served
    assert again.answer == baselines[last.topology][0].answer
