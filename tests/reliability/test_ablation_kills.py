"""The SIGKILL loop on ablations: ``stratagem ablate`` killed at 10 random moments, and
rerun after each kill until it finishes, ends with the results of an uninterrupted run and
each run's tokens counted once; durable (``[run] durable = true``) and not.

Each kill waits until the ledger has grown by a random number of rows since the process
started (so kills land inside runs, between a call's row and its run's record, and inside
checkpoint writes), then a random short delay. An uninterrupted run of the same config
in another folder is the baseline (the simulated backend is a pure function of the run, so
two uninterrupted runs are identical). Compared, by run id:

* the results: every run's correct, answer, stop reason, score, total and per-role tokens
  and transfer count;
* tokens counted once: the sum of each run's ledger rows that are not ``lost`` equals the
  baseline's, and stays within the run's allocation; its transfers are the baseline's (same
  count, same moves: none recorded twice); no call id is duplicated.

A ``lost`` row (a call in flight at a kill) is billed in the ledger total but excluded from
per-run totals; the simulated backend writes no intents, so there are none here.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratagem.ablation import ResultsStore
from stratagem.budgets import LedgerEntry, LedgerStore, Transfer
from stratagem.records import RunRecord

KILLS = 10
SEED = 19_000_002  # of the kill moments: a failure names its kill, and it reproduces
CONFIG = """\
name = "kill-loop"
output = "{output}"

[endpoint]
backend = "simulated"

[grid]
topologies = [
  "single",
  "plan_solve",
  "decompose_solve",
  {{ name = "best_of_n", n = 4, select = "judge", label = "best_of_4+judge" }},
  {{ name = "best_of_n", n = 4, select = "vote", label = "best_of_4+vote" }},
  {{ name = "refine", max_rounds = 3 }},
  {{ name = "tree", mode = "beam" }},
  "adaptive",
]
budgets = [800, 1600]
seeds = [0]
policies = ["uniform", "difficulty_adaptive"]

[[suites]]
name = "arith"
n = 5
depth = [2, 8]

[run]
concurrency = 16
durable = {durable}
reallocation = "judge_feedback"

[simulation]
skill = 0.0
difficulty_weight = 3.0
token_weight = 0.4
plan_bonus = 0.3
decompose_bonus = 0.5
feedback_bonus = 0.4
judge_accuracy = 0.85
"""
PLANNED = 8 * 2 * 2 * 5
TIMEOUT_S = 300  # of one process: a hang fails the test instead of blocking it


def _command() -> list[str]:
    script = Path(sys.executable).with_name("stratagem")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from stratagem.cli import main; sys.exit(main())"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("STRATAGEM_")
           and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(NO_PROXY="*", no_proxy="*", COLUMNS="250")
    return env


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*_command(), "-q", "ablate", config.name], cwd=config.parent,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _count(path: Path, table: str) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            count = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        conn.close()
    except sqlite3.Error:  # not created yet, or its tables not yet, or busy
        return -1
    return count


def _config(folder: Path, durable: bool) -> Path:
    folder.mkdir()
    path = folder / "kill-loop.toml"
    path.write_text(CONFIG.format(output=(folder / "out").as_posix(),
                                  durable=str(durable).lower()), encoding="utf-8")
    return path


@dataclass
class Loop:
    kills: int = 0
    starts: int = 0
    cut: int = 0  # runs that had ledger rows but no record at a kill, summed over the kills
    output: str = ""


def _cut_runs(out: Path) -> int:
    """Runs with ledger rows and no record: what a kill interrupted."""
    try:
        with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as conn:
            conn.execute(f"ATTACH 'file:{out / 'results.sqlite'}?mode=ro' AS r")
            count = int(conn.execute(
                "SELECT COUNT(DISTINCT run_id) FROM ledger_calls "
                "WHERE run_id NOT IN (SELECT run_id FROM r.runs)").fetchone()[0])
        conn.close()
    except sqlite3.Error:  # a kill before both files had their tables
        return 0
    return count


def _kill_loop(config: Path, rng: random.Random) -> Loop:
    """Start the ablation, SIGKILL it at a random moment, KILLS times; then let it finish."""
    loop = Loop()
    while True:
        process = _start(config)
        loop.starts += 1
        try:
            if _one_start(process, loop, config.parent / "out", rng):
                return loop
        finally:  # a failed assertion leaves no process behind
            if process.poll() is None:
                process.kill()
                process.communicate()


def _one_start(process: subprocess.Popen[str], loop: Loop, out: Path,
               rng: random.Random) -> bool:
    """Kill ``process`` after the ledger grew by a random number of rows and a random
    delay (False), or, once KILLS kills are done, let it finish (True)."""
    ledger = out / "ledger.sqlite"
    if loop.kills < KILLS:
        grow, delay = rng.randint(1, 30), rng.uniform(0.0, 0.05)
        start_rows = max(_count(ledger, "ledger_calls"), 0)
        deadline = time.monotonic() + TIMEOUT_S
        while (process.poll() is None and time.monotonic() < deadline
               and _count(ledger, "ledger_calls") < start_rows + grow):
            time.sleep(0.005)
        time.sleep(delay)
        if process.poll() is None:
            process.kill()
            _, err = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == -signal.SIGKILL, (process.returncode, err[-2000:])
            loop.kills += 1
            loop.cut += _cut_runs(out)
            return False
    stdout, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout}{err[-3000:]}"
    assert "Traceback" not in stdout + err
    loop.output = stdout
    return True


@dataclass(frozen=True)
class Folder:
    records: dict[str, RunRecord]
    rows: list[LedgerEntry]
    transfers: list[Transfer]


def _load(out: Path) -> Folder:
    with ResultsStore(out / "results.sqlite") as rs:
        records = {r.run_id: r for r in rs.records()}
    with LedgerStore(out / "ledger.sqlite") as store:
        return Folder(records, store.entries(), store.transfers())


def _outcome(r: RunRecord) -> tuple[object, ...]:
    return (r.correct, r.answer, r.stop_reason, r.score, r.tokens_total, r.role_tokens,
            r.accepted_tokens, r.transfers, r.calls)


def _per_run_tokens(rows: list[LedgerEntry]) -> Counter[str]:
    tokens: Counter[str] = Counter()
    for r in rows:
        if r.status != "lost":
            tokens[r.run_id] += r.total_tokens
    return tokens


def _moves(transfers: list[Transfer]) -> Counter[tuple[object, ...]]:
    return Counter((t.run_id, t.from_role, t.to_role, t.tokens, t.reason, t.node)
                   for t in transfers)


def _mismatches(base: Folder, got: Folder) -> list[str]:
    """Every way ``got`` differs from the uninterrupted ``base`` (see the module docstring)."""
    bad = [f"{rid}: results {_outcome(r)} != {_outcome(got.records[rid])}"
           if rid in got.records else f"{rid}: no record"
           for rid, r in base.records.items()
           if rid not in got.records or _outcome(got.records[rid]) != _outcome(r)]
    bad += [f"{rid}: a record the baseline does not have"
            for rid in got.records.keys() - base.records.keys()]
    want, have = _per_run_tokens(base.rows), _per_run_tokens(got.rows)
    bad += [f"{rid}: ledger {have[rid]} tokens, uninterrupted {want[rid]}"
            for rid in want.keys() | have.keys() if have[rid] != want[rid]]
    bad += [f"{rid}: ledger {have[rid]} tokens over its allocation {r.allocated}"
            for rid, r in got.records.items() if have[rid] > r.allocated]
    extra, missing = _moves(got.transfers) - _moves(base.transfers), \
        _moves(base.transfers) - _moves(got.transfers)
    bad += [f"transfer made {n} more time(s): {m}" for m, n in extra.items()]
    bad += [f"transfer missing {n} time(s): {m}" for m, n in missing.items()]
    ids = Counter(r.call_id for r in got.rows)
    bad += [f"call {cid} recorded {n} times" for cid, n in ids.items() if n > 1]
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "not-durable"])
def test_a_sigkilled_ablation_resumes_to_the_uninterrupted_results(
    tmp_path: Path, durable: bool,
) -> None:
    baseline_config = _config(tmp_path / "baseline", durable)
    killed_config = _config(tmp_path / "killed", durable)
    baseline = _start(baseline_config)  # alongside the loop: two processes, two cores
    try:
        loop = _kill_loop(killed_config, random.Random(SEED + durable))
        out, err = baseline.communicate(timeout=TIMEOUT_S)
    finally:  # a failed loop leaves no process behind
        if baseline.poll() is None:
            baseline.kill()
            baseline.communicate()
    assert baseline.returncode == 0, f"{out}{err[-3000:]}"
    base, got = _load(baseline_config.parent / "out"), _load(killed_config.parent / "out")
    assert loop.kills == KILLS and loop.starts == KILLS + 1
    assert loop.cut > 0, "no kill interrupted a run"
    assert len(base.records) == PLANNED and base.transfers, "the baseline ran the whole grid"
    assert all(r.tokens_total <= r.allocated for r in base.records.values())
    mismatches = _mismatches(base, got)
    assert not mismatches, (f"{len(mismatches)} mismatch(es) after {loop.kills} kills:\n"
                            + "\n".join(mismatches[:40]))
    # A finished ablation rerun does nothing more.
    again = subprocess.run([*_command(), "-q", "ablate", killed_config.name],
                           cwd=killed_config.parent, env=_env(), capture_output=True,
                           text=True, timeout=TIMEOUT_S, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"0 run(s) done, {PLANNED} already done before" in again.stdout
    assert _mismatches(base, _load(killed_config.parent / "out")) == []
