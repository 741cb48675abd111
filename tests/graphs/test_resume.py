"""Crash and resume: an exception in a branch, and a process killed with SIGKILL.

After either crash, :func:`resume` must finish the run re-running only the unfinished work,
and the durable ledger must reconcile exactly: every row of the crashed process is still
there, nothing is recorded twice, every call the model received has exactly one row, and the
rebuilt budget has spent what the ledger says.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from stratagem.agents import DECOMPOSER_PROMPT, ChatRequest, Message, ModelClient
from stratagem.budgets import Budget, LedgerEntry, LedgerStore, TokenLedger
from stratagem.errors import ConfigError, RunError
from stratagem.graphs import (
    RunContext,
    best_of_n,
    decompose_solve,
    resume,
    run,
    sqlite_checkpointer,
)
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"


def fresh_budget() -> Budget:
    return Budget(total=20_000, roles={"solver": 16_000, "judge": 4_000})


def reconcile(before: Sequence[LedgerEntry], after: Sequence[LedgerEntry]) -> None:
    """Every row of the crashed process survives unchanged, and none is duplicated."""
    ids = [e.call_id for e in after]
    assert len(ids) == len(set(ids)), "a call was recorded twice"
    by_id = {e.call_id: e for e in after}
    for e in before:
        assert by_id.get(e.call_id) == e, f"row {e.call_id} of the crashed process was lost"


def test_exception_in_one_branch_then_resume(tmp_path: Path) -> None:
    failed: list[int] = []
    answered: list[int] = []

    async def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if request.seed == 2 and not failed:
            # Fail only after the siblings have answered and their writes are checkpointed
            # (a branch still in flight when one fails is cancelled, and re-run on resume).
            for _ in range(500):
                if len(answered) == 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            failed.append(2)
            raise RuntimeError("branch 2 lost its connection")
        await asyncio.sleep(0.01)
        answered.append(request.seed or 0)
        return "Answer: 42"

    model = FunctionModel(respond)
    ckpt, ledger_path = tmp_path / "ckpt.sqlite", tmp_path / "ledger.sqlite"
    graph = best_of_n(4, select="vote")

    with LedgerStore(ledger_path) as store:
        ctx = RunContext(client=ModelClient(model, ledger=TokenLedger(store)),
                         budget=fresh_budget())
        with pytest.raises(RunError, match=r"RuntimeError: branch 2 .*resume it with thread id "
                                           r"'t1'"):
            run(graph, TASK, context=ctx, thread_id="t1", checkpoint=ckpt)
        before = store.entries()
    assert [(e.branch, e.status) for e in before if e.status != "ok"] == [("2", "error")]
    assert len(before) == len(model.requests) == 4
    calls_before = len(model.requests)

    with LedgerStore(ledger_path) as store:
        ledger = TokenLedger(store)
        budget = fresh_budget()
        result = resume(graph, "t1", context=RunContext(
            client=ModelClient(model, ledger=ledger), budget=budget), checkpoint=ckpt)
        after = store.entries()

    assert (result.answer, result.stop_reason) == ("42", "done")
    # Only the failed branch ran again.
    assert [r.seed for r in model.requests[calls_before:]] == [2]
    reconcile(before, after)
    assert len(after) == len(model.requests) == 5
    run_rows = ledger.entries(run_id=result.run_id)
    assert len(run_rows) == 5 and result.billed.calls == 5 and result.billed.error_calls == 1
    assert budget.spent() == sum(e.total_tokens for e in run_rows) == result.billed.total_tokens
    assert budget.spent("solver") == result.by_role["solver"].total_tokens
    assert len(result.state["candidates"]) == 4
    assert sorted(c["branch"] for c in result.state["candidates"]) == ["0", "1", "2", "3"]


def test_a_crash_mid_chain_does_not_repeat_finished_steps(tmp_path: Path) -> None:
    subtasks = [{"id": "1", "description": "step one", "depends_on": []},
                {"id": "2", "description": "step two", "depends_on": ["1"]}]
    crashed: list[bool] = []

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if messages[0]["content"] == DECOMPOSER_PROMPT.system:
            return json.dumps({"subtasks": subtasks})
        if "Task: step two" in str(messages[-1]["content"]) and not crashed:
            crashed.append(True)
            raise RuntimeError("process hiccup")
        return "Answer: 42"

    model = FunctionModel(respond)
    ckpt = tmp_path / "ckpt.sqlite"
    ledger = TokenLedger()
    ctx = RunContext(client=ModelClient(model, ledger=ledger), budget=fresh_budget())
    with pytest.raises(RunError, match="resume"):
        run(decompose_solve(), TASK, context=ctx, thread_id="chain", checkpoint=ckpt)
    before = ledger.entries()
    assert [e.node for e in before] == ["decompose", "subtask", "subtask"]

    budget = fresh_budget()
    result = resume(decompose_solve(), "chain", checkpoint=ckpt, context=RunContext(
        client=ModelClient(model, ledger=ledger), budget=budget))
    assert (result.answer, result.stop_reason) == ("42", "done")
    resumed = ledger.entries()[len(before):]
    assert [(e.node, e.branch) for e in resumed] == [("subtask", "2"), ("aggregate", None)]
    reconcile(before, ledger.entries())
    assert len(ledger) == len(model.requests) == 5
    assert budget.spent() == result.billed.total_tokens


def test_resume_needs_a_known_thread(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.sqlite"
    ctx = RunContext(client=ModelClient(FunctionModel(lambda m, r: "Answer: 42")))
    run(best_of_n(2), TASK, context=ctx, thread_id="done", checkpoint=ckpt)
    calls = len(ctx.client.ledger)
    with pytest.raises(ConfigError, match="no run with thread id 'other'"):
        resume(best_of_n(2), "other", context=ctx, checkpoint=ckpt)
    # A finished run resumes to its result without calling the model again.
    again = resume(best_of_n(2), "done", context=ctx, checkpoint=ckpt)
    assert again.answer == "42" and len(ctx.client.ledger) == calls


CHILD = """
import asyncio, os, signal, sys
from stratagem.agents import ModelClient
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.graphs import RunContext, best_of_n, run
from stratagem.testing import FunctionModel

folder = sys.argv[1]
calls = {"n": 0}

async def respond(messages, request):
    calls["n"] += 1
    me = calls["n"]
    await asyncio.sleep(0.05)
    if me == 3:
        # Killed mid-call, after an await: the other branches have finished and their
        # writes are checkpointed; this call never gets a response, so it has no row.
        await asyncio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    return "Answer: 42"

ledger = TokenLedger(LedgerStore(os.path.join(folder, "ledger.sqlite")))
ctx = RunContext(client=ModelClient(FunctionModel(respond), ledger=ledger),
                 budget=Budget(total=20000, roles={"solver": 16000, "judge": 4000}))
run(best_of_n(4, select="vote"), "What is 6*7?", context=ctx, run_id="r1", thread_id="t1",
    checkpoint=os.path.join(folder, "ckpt.sqlite"))
print("UNREACHABLE: the run finished")
"""


def test_sigkill_mid_run_then_resume_in_a_new_process(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "UNREACHABLE" not in child.stdout

    ledger_path = tmp_path / "ledger.sqlite"
    with LedgerStore(ledger_path) as store:
        before = store.entries()
    assert len(before) == 3 and all(e.status == "ok" and e.run_id == "r1" for e in before)
    finished = {e.branch for e in before}

    model = FunctionModel(lambda m, r: "Answer: 42")
    with LedgerStore(ledger_path) as store:
        ledger = TokenLedger(store)
        assert len(ledger) == 3  # the fresh ledger reads the crashed process's rows
        budget = Budget(total=20_000, roles={"solver": 16_000, "judge": 4_000})
        result = resume(best_of_n(4, select="vote"), "t1", checkpoint=tmp_path / "ckpt.sqlite",
                        context=RunContext(client=ModelClient(model, ledger=ledger),
                                           budget=budget))
        after = store.entries()

    assert (result.run_id, result.answer, result.stop_reason) == ("r1", "42", "done")
    # Only the branch that was in flight ran again.
    assert len(model.requests) == 1
    (rerun,) = [e for e in after if e.call_id not in {b.call_id for b in before}]
    assert rerun.branch not in finished and {*finished, rerun.branch} == {"0", "1", "2", "3"}
    assert model.requests[0].seed == int(rerun.branch or "-1")
    # Exact reconciliation: rows before the crash + rows after = all rows, none twice.
    reconcile(before, after)
    assert len(after) == len(before) + len(model.requests) == 4
    assert result.billed.calls == 4
    assert budget.spent() == sum(e.total_tokens for e in after) == result.billed.total_tokens
    assert sorted(c["branch"] for c in result.state["candidates"]) == ["0", "1", "2", "3"]
    assert os.path.exists(tmp_path / "ckpt.sqlite")


# -- the checkpoint file ----------------------------------------------------------------------

def test_a_checkpoint_path_is_opened_with_synchronous_normal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run(checkpoint=path)`` saves through a WAL connection at synchronous=NORMAL (read
    from the very connection the run used, while it is open); the checkpoints are there."""
    import contextlib

    from stratagem.graphs import sqlite_checkpointer

    seen: list[tuple[str, int]] = []
    real = sqlite_checkpointer

    @contextlib.asynccontextmanager
    async def spying(path: Path, **kwargs: Any) -> Any:
        async with real(path, **kwargs) as saver:
            yield saver
            async with saver.conn.execute("PRAGMA journal_mode") as cur:
                mode = (await cur.fetchone())[0]  # type: ignore[index]
            async with saver.conn.execute("PRAGMA synchronous") as cur:
                level = (await cur.fetchone())[0]  # type: ignore[index]
            seen.append((str(mode), int(level)))

    monkeypatch.setattr("stratagem.graphs._run.sqlite_checkpointer", spying)  # the run's seam
    model = FunctionModel(lambda messages, request: "Answer: 42")
    path = tmp_path / "ck.sqlite"
    result = run(best_of_n(2, select="vote"), TASK, context=RunContext(
        client=ModelClient(model), budget=fresh_budget()), checkpoint=path)
    assert result.answer == "42"
    assert seen == [("wal", 1)]

    async def count() -> int:
        async with real(path) as saver:
            return len([c async for c in saver.alist(None)])

    assert asyncio.run(count()) >= 3  # input, the fan-out, the selection


@pytest.mark.parametrize("kwargs,problem", [({"synchronous": "fsync"}, "synchronous must be"),
                                            ({}, "is a directory")])
def test_a_bad_checkpoint_gets_a_clear_error(tmp_path: Path, kwargs: dict[str, str],
                                             problem: str) -> None:
    async def go() -> None:
        async with sqlite_checkpointer(tmp_path, **kwargs):
            pass

    with pytest.raises(ConfigError, match=problem):
        asyncio.run(go())
