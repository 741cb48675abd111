"""Framework overhead: one 4-role workflow through stratagem vs a bare LangGraph graph.

The workflow is a chain planner -> decomposer -> solver -> judge, one model call per role,
on an in-process model that sleeps a fixed latency per call and returns a fixed reply with
usage (a :class:`~stratagem.testing.FunctionModel`). It runs

  * through stratagem: nodes made with ``stratagem_node`` over ``RunState``, every call
    through ``ModelClient`` (budget reservation and commit, tiktoken input estimate, pricing,
    a ``TokenLedger`` writing through to a durable ``LedgerStore`` file), run with
    ``stratagem.graphs.arun(..., checkpoint=file)``: a ``sqlite_checkpointer`` (WAL,
    synchronous=NORMAL) with ``durability="sync"`` after every superstep, and the run's audit
    at the end;
  * the same, with one ``sqlite_checkpointer`` opened once and passed to every run (what the
    ablation runner does) instead of a file path (a saver opened and closed per run);
  * as a bare LangGraph ``StateGraph`` (no checkpointer) whose nodes call the *same* model
    object's ``send`` directly: same latency, same replies, same number of calls.

Runs rotate between the variants (so drift and noise hit all alike) after a warm-up. The
headline ratio is of mean wall time per workflow (medians are printed too); the overhead per
model call is ``(stratagem - bare) / 4``, so the ratio at any other latency ``L`` is about
``1 + 4 * overhead / (4 * L + bare engine time)``. First, the CPU cost per run at zero
latency is broken down by adding one stratagem layer at a time.

SQLite timings are disk-bound: other processes' I/O moves them (TECH_NOTES 1.11). Run it on
a quiet machine, and more than once.

Usage:
    python bench/overhead.py [--runs 40] [--latency 0.1] [--extra-latency 0.05]

Targets (issue 18), with one shared saver (what the ablation runner does): <= 1.02x at 100 ms
per call, <= 1.05x at 50 ms, and <= 1 ms per call above bare LangGraph.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from stratagem.agents import ChatRequest, Message, ModelClient
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.graphs import (
    RunContext,
    RunState,
    accepted,
    arun,
    sqlite_checkpointer,
    stratagem_node,
)
from stratagem.logging import configure_logging
from stratagem.testing import FunctionModel, ScriptedReply

ROLES = ("planner", "decomposer", "solver", "judge")
TASK = "A box holds 6 rows of 7 eggs. How many eggs are in the box?"
REPLY = ScriptedReply("Six rows of seven eggs make 42 eggs.\nAnswer: 42",
                      prompt_tokens=120, completion_tokens=16)
TARGETS = {0.1: 1.02, 0.05: 1.05}
"""Wall-time ratio targets by latency per call (seconds), for the shared saver."""
TARGET_PER_CALL_MS = 1.0


def make_model(latency: float) -> FunctionModel:
    """The in-process model: sleeps ``latency`` seconds, then a fixed reply with usage."""

    async def respond(messages: Sequence[Message], request: ChatRequest) -> ScriptedReply:
        await asyncio.sleep(latency)
        return REPLY

    return FunctionModel(respond, model="gpt-4o-mini")


def prompt(role: str, task: str, previous: str) -> list[dict[str, str]]:
    """The messages a role sends (the same in both versions)."""
    return [{"role": "system", "content": f"You are the {role}. Be brief."},
            {"role": "user", "content": f"Task: {task}\n\nSo far:\n{previous or '-'}"}]


# -- through stratagem ------------------------------------------------------------------------


def role_node(role: str) -> Any:
    """A stratagem node: one budgeted, ledgered call as ``role``."""

    async def call(state: RunState, ctx: RunContext) -> dict[str, Any]:
        notes = state.get("notes", [])
        done = await ctx.client.complete(prompt(role, state["task"], notes[-1] if notes else ""),
                                         role=role, node=role, max_output=64)
        update: dict[str, Any] = {"notes": [done.text],
                                  **accepted(done)}
        if role == "judge":
            update["answer"] = done.text.rsplit("Answer:", 1)[-1].strip()
        return update

    call.__name__ = role
    return stratagem_node(call)


def chain(builder: Any, node: Any) -> Any:
    """The roles in order, one node each (``node(role)``), START to END: both graphs' shape."""
    for role in ROLES:
        builder.add_node(role, node(role))
    builder.add_edge(START, ROLES[0])
    for a, b in itertools.pairwise(ROLES):
        builder.add_edge(a, b)
    builder.add_edge(ROLES[-1], END)
    return builder


def stratagem_graph() -> Any:
    builder = chain(StateGraph(RunState, context_schema=RunContext), role_node)
    return builder.compile().with_config(recursion_limit=len(ROLES) + 2)


async def run_stratagem(graph: Any, client: ModelClient, checkpoint: Any) -> str:
    budget = Budget(total=4_000, roles={r: 1_000 for r in ROLES})
    result = await arun(graph, TASK, context=RunContext(client=client, budget=budget),
                        checkpoint=checkpoint)
    assert result.billed.calls == len(ROLES), result.billed
    return result.answer


# -- bare LangGraph -----------------------------------------------------------------------------


class BareState(TypedDict, total=False):
    task: str
    notes: list[str]
    answer: str


def bare_graph(model: FunctionModel) -> Any:
    def bare_node(role: str) -> Any:
        async def call(state: BareState) -> dict[str, Any]:
            notes = state.get("notes", [])
            request = ChatRequest(messages=prompt(role, state["task"], notes[-1] if notes else ""),
                                  model=model.model, max_output=64, role=role, node=role)
            response = await model.send(request)
            update: dict[str, Any] = {"notes": [*notes, response.text]}
            if role == "judge":
                update["answer"] = response.text.rsplit("Answer:", 1)[-1].strip()
            return update

        return call

    return chain(StateGraph(BareState), bare_node).compile()


async def run_bare(graph: Any) -> str:
    out = await graph.ainvoke({"task": TASK, "notes": []})
    return str(out["answer"])


# -- measurement ---------------------------------------------------------------------------------

VARIANTS = ("bare", "stratagem", "shared")
"""bare LangGraph; stratagem with ``checkpoint=<file path>`` (a saver opened per run, the
documented call); stratagem with one ``sqlite_checkpointer`` opened once and passed to every run
(what the ablation runner does)."""


async def measure(latency: float, runs: int, folder: Path) -> tuple[dict[str, list[float]], int]:
    """Alternating timed runs of every variant; returns seconds per variant and ledger rows."""
    model = make_model(latency)
    bare = bare_graph(model)
    graph = stratagem_graph()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with LedgerStore(folder / f"ledger-{latency}.sqlite") as store:
        client = ModelClient(model, ledger=TokenLedger(store))
        checkpoint = folder / f"checkpoints-{latency}.sqlite"
        async with sqlite_checkpointer(folder / f"shared-{latency}.sqlite") as saver:
            calls = {"bare": lambda: run_bare(bare),
                     "stratagem": lambda: run_stratagem(graph, client, checkpoint),
                     "shared": lambda: run_stratagem(graph, client, saver)}
            for _ in range(2):  # warm-up: imports, tiktoken, SQLite files and schemas
                for v in VARIANTS:
                    assert await calls[v]() == "42"
            for i in range(runs):
                # rotate the order so no variant always runs first
                for v in VARIANTS[i % 3:] + VARIANTS[:i % 3]:
                    t0 = time.perf_counter()
                    await calls[v]()
                    times[v].append(time.perf_counter() - t0)
        rows = len(client.ledger)
        await client.aclose()
    return times, rows


async def breakdown(folder: Path, runs: int = 100) -> dict[str, float]:
    """CPU cost per run at zero model latency, adding one stratagem layer at a time."""
    model = make_model(0.0)
    bare = bare_graph(model)
    graph = stratagem_graph()
    mem = ModelClient(model)
    durable = ModelClient(model, ledger=TokenLedger(LedgerStore(folder / "bd-ledger.sqlite")))
    steps = {
        "bare LangGraph, same calls": lambda: run_bare(bare),
        "+ stratagem nodes, client, in-memory ledger": lambda: arun(
            graph, TASK, context=RunContext(client=mem)),
        "+ budget reservations": lambda: run_stratagem(graph, mem, None),
        "+ durable ledger (LedgerStore file)": lambda: run_stratagem(graph, durable, None),
        "+ sync SQLite checkpoint (checkpoint=path)": lambda: run_stratagem(
            graph, durable, folder / "bd-checkpoints.sqlite"),
    }
    out = {}
    for name, call in steps.items():
        for _ in range(3):
            await call()
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            await call()
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts)
    assert durable.ledger.store is not None
    durable.ledger.store.close()
    return out


def report(latency: float, times: dict[str, list[float]],
           rows: int) -> dict[str, tuple[float, float]]:
    """Print one latency's figures; returns (ratio, overhead ms per call) by variant."""
    floor = len(ROLES) * latency * 1000
    n = len(times["bare"])
    print(f"latency {latency * 1000:.0f} ms/call, {len(ROLES)} calls/run, {n} runs each "
          f"(model time alone {floor:.0f} ms/run; ledger rows at the end: {rows})")
    names = {"bare": "bare LangGraph", "stratagem": "stratagem, checkpoint=path",
             "shared": "stratagem, shared saver"}
    mb, medb = statistics.fmean(times["bare"]), statistics.median(times["bare"])
    out = {}
    for v in VARIANTS:
        m, med = statistics.fmean(times[v]), statistics.median(times[v])
        line = (f"  {names[v]:<28} mean {m * 1000:8.2f} ms  median {med * 1000:8.2f} ms  "
                f"above model time {m * 1000 - floor:6.2f} ms")
        if v != "bare":
            per_call = (m - mb) / len(ROLES) * 1000
            line += (f"  ratio {m / mb:.4f}x (median {med / medb:.4f}x), "
                     f"{per_call:.2f} ms per call")
            out[v] = (m / mb, per_call)
        print(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs of each version")
    parser.add_argument("--latency", type=float, default=0.1,
                        help="model latency per call in seconds (the headline)")
    parser.add_argument("--extra-latency", type=float, nargs="*", default=[0.05],
                        help="further latencies to report (not in the summary)")
    args = parser.parse_args()
    configure_logging(level="warning")  # as a user would; llm.call events are info

    with tempfile.TemporaryDirectory() as tmp:
        print("CPU cost per run at zero model latency (median of 100), one layer at a time:")
        for name, seconds in asyncio.run(breakdown(Path(tmp))).items():
            print(f"  {name:<46} {seconds * 1000:7.2f} ms")
        results = {}
        for latency in [args.latency, *args.extra_latency]:
            times, rows = asyncio.run(measure(latency, args.runs, Path(tmp)))
            results[latency] = report(latency, times, rows)
    parts = []
    for latency, by_variant in results.items():
        ratio, per_call = by_variant["shared"]
        target = TARGETS.get(latency)
        verdict = "" if target is None else \
            f" ({'meets' if ratio <= target else 'MISSES'} <= {target}x)"
        parts.append(f"{ratio:.3f}x at {latency * 1000:.0f} ms per call{verdict}, "
                     f"{per_call:.2f} ms per call")
    path_ratio, path_per_call = results[args.latency]["stratagem"]
    head_per_call = results[args.latency]["shared"][1]
    print(f"SUMMARY overhead: stratagem (budget + durable ledger + sync SQLite checkpoint, one "
          f"shared saver) / bare LangGraph = {'; '.join(parts)} "
          f"({'meets' if head_per_call <= TARGET_PER_CALL_MS else 'MISSES'} <= "
          f"{TARGET_PER_CALL_MS} ms per call); with checkpoint=path {path_ratio:.3f}x, "
          f"{path_per_call:.2f} ms per call (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
