"""A durable run that kills itself with SIGKILL: the child process of ``test_crash_resume.py``.

Usage: ``python _crash_child.py FOLDER TOPOLOGY run|resume KILL_AT DELAY_S``

The run writes ``ledger.sqlite`` and ``ckpt.sqlite`` in FOLDER. Its model is a deterministic
:class:`~stratagem.testing.FunctionModel` (a reply depends only on the request's content,
role and seed) that appends one line to ``served.log`` for every call it answers, before
answering; on its KILL_AT-th call of this process (0: never) it waits DELAY_S seconds, so
parallel branches progress, then kills the process before answering.

The test module imports this file too, for the uninterrupted baseline and the final resume,
so every process runs exactly the same model, graphs and budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stratagem.agents import ChatRequest, Message, ModelClient
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.graphs import RunContext, RunResult, best_of_n, refine, resume, run
from stratagem.testing import FunctionModel

TASK = "What is 6*7?"
RUN_ID, THREAD_ID = "crash-run", "crash-thread"

TOPOLOGIES: dict[str, Callable[[], Any]] = {
    # 4 parallel samples, then 4 concurrent judge calls inside one node: 8 calls.
    "best_of_n": lambda: best_of_n(4, select="judge"),
    # solve, judge, revise, judge, revise, judge (accepted on the third draft): 6 calls.
    "refine": lambda: refine(3),
}
CALLS = {"best_of_n": 8, "refine": 6}
"""Model calls of an uninterrupted run of each topology."""


def fresh_budget() -> Budget:
    """The run's caps: generous, so no output cap ever truncates a reply (a resumed run that
    re-bills lost calls must not see different clamps than the uninterrupted one)."""
    return Budget(total=100_000, roles={"solver": 80_000, "judge": 20_000})


def reply(messages: Sequence[Message], request: ChatRequest) -> str:
    """The deterministic model: drafts improve on the previous one, the judge accepts the
    third draft and prefers higher seeds."""
    content = "\n".join(str(m.get("content", "")) for m in messages)
    drafts = [int(n) for n in re.findall(r"draft (\d+)", content)]
    if request.role == "judge":
        draft = max(drafts, default=0)
        seed = re.search(r"seed (\d+)", content)
        bonus = int(seed.group(1)) / 100 if seed else 0.0
        if draft >= 3:
            return f"every step checks out\nSCORE: {0.9 + bonus:.2f}\nVERDICT: accept"
        return f"draft {draft} is not there yet\nSCORE: {0.1 * draft + bonus:.2f}\nVERDICT: reject"
    n = max(drafts, default=0) + 1
    return f"draft {n} seed {request.seed}\nAnswer: {40 + n + (request.seed or 0)}"


def make_model(served_log: str, kill_at: int = 0, delay_s: float = 0.0) -> FunctionModel:
    """The model of one process (see the module docstring)."""
    calls = 0

    async def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        nonlocal calls
        calls += 1
        me = calls
        await asyncio.sleep(0.002)  # a real await, so parallel branches interleave
        if me == kill_at:
            await asyncio.sleep(delay_s)
            os.kill(os.getpid(), signal.SIGKILL)
        text = reply(messages, request)
        with open(served_log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "role": request.role,
                                "node": request.node, "seed": request.seed}) + "\n")
        return text

    return FunctionModel(respond)


def execute(folder: str, topology: str, mode: str, model: FunctionModel,
            budget: Budget | None = None) -> RunResult:
    """Run (``mode="run"``) or resume the durable run kept in ``folder``."""
    ckpt = os.path.join(folder, "ckpt.sqlite")
    with LedgerStore(os.path.join(folder, "ledger.sqlite")) as store:
        ctx = RunContext(client=ModelClient(model, ledger=TokenLedger(store)),
                         budget=budget if budget is not None else fresh_budget())
        graph = TOPOLOGIES[topology]()
        if mode == "run":
            return run(graph, TASK, context=ctx, run_id=RUN_ID, thread_id=THREAD_ID,
                       checkpoint=ckpt)
        return resume(graph, THREAD_ID, context=ctx, checkpoint=ckpt)


if __name__ == "__main__":
    folder, topology, mode, kill_at, delay_s = sys.argv[1:6]
    model = make_model(os.path.join(folder, "served.log"), int(kill_at), float(delay_s))
    execute(folder, topology, mode, model)
    print("FINISHED: the kill point was never reached")
