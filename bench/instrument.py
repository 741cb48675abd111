"""Instrumentation overhead: the example LangGraph app bare, with the callback handler, and
with a budgeted model.

The app is ``examples/instrument_langgraph.py``'s graph (plan -> a ``Send`` fan-out of three
solvers -> judge: five model calls over three supersteps), imported from the example, on an
in-process LangChain chat model that sleeps a fixed latency per call and returns a fixed reply
with ``usage_metadata``. No HTTP is involved, so what differs between the variants is only
what stratagem adds:

  * ``bare``: the app as its author wrote it, no callbacks;
  * ``handler``: the same compiled graph, ``config={"callbacks": [StratagemCallbackHandler]}``
    (one ledger row per call, attributed to node, branch and role);
  * ``budgeted``: the app built on ``budgeted(model, account)`` (tiktoken prompt count,
    reservation with a clamped cap, write-ahead intent, commit, a ledger row per attempt),
    with the handler attached too, as the example's ``--enforce`` does (it skips the rows the
    budgeted model records itself).

Each variant's graph is compiled once, outside the timings; each has one in-memory
``Account`` (as the example), with a budget no run exhausts. Runs rotate between the variants
(so drift and noise hit all alike) after a warm-up. The headline ratio is of mean wall time
per run (medians are printed too). The overhead per model call is measured first at zero
latency, where a run's wall time is all CPU: ``(variant - bare) / 5`` calls, of medians
(the headline per-call figure) and of means. At latency ``L``
only the three supersteps' worth of it is on the critical path (the solvers run in parallel
threads), so ``(variant - bare) / 3`` is printed as well.

Usage:
    python bench/instrument.py [--runs 40] [--latency 0.1] [--cpu-runs 200]

Target: <= 1.03x at 100 ms per call.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from stratagem.budgets import Account, Budget
from stratagem.integrations.langchain import StratagemCallbackHandler, budgeted
from stratagem.logging import configure_logging

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "instrument_langgraph.py"
ROLES = {"plan": "planner", "solve": "solver", "judge": "judge"}
CALLS = 5
"""Model calls per run: plan, three solvers, judge."""
SUPERSTEPS = 3
"""Calls on the critical path of a run (the three solvers run concurrently)."""
TARGET = 1.03
VARIANTS = ("bare", "handler", "budgeted")
USAGE = {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}


class SleepyChatModel(BaseChatModel):
    """An in-process chat model: sleeps ``latency`` seconds, then a fixed reply with usage."""

    latency: float = 0.1
    """Seconds slept per call."""
    model_name: str = "gpt-4o-mini"
    """The model name reported (a name tiktoken knows, for the budgeted model's count)."""

    @property
    def _llm_type(self) -> str:
        return "sleepy-fake"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        message = AIMessage(content="Seven twelves make 84. Answer: 84",
                            usage_metadata=USAGE,
                            response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])


def load_example() -> ModuleType:
    """``examples/instrument_langgraph.py`` as a module (examples are not a package)."""
    spec = importlib.util.spec_from_file_location("instrument_langgraph", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def variants(latency: float) -> tuple[dict[str, Callable[[], object]], dict[str, Account]]:
    """One runner per variant (graphs compiled here, once) and the accounts they write to."""
    example = load_example()
    model = SleepyChatModel(latency=latency)
    inputs = {"question": "What is 12 * 7?"}
    accounts = {v: Account(budget=Budget(total=10**12), run_id=f"bench-{v}")
                for v in VARIANTS[1:]}
    bare = example.build_app(model)
    handler = StratagemCallbackHandler(accounts["handler"], roles=ROLES)
    enforce = example.build_app(budgeted(model, accounts["budgeted"], backend="generic"))
    enforce_handler = StratagemCallbackHandler(accounts["budgeted"], roles=ROLES)
    runners: dict[str, Callable[[], object]] = {
        "bare": lambda: bare.invoke(inputs),
        "handler": lambda: bare.invoke(inputs, config={"callbacks": [handler]}),
        "budgeted": lambda: enforce.invoke(inputs, config={"callbacks": [enforce_handler]}),
    }
    return runners, accounts


def measure(latency: float, runs: int, warmup: int = 3) -> tuple[dict[str, list[float]],
                                                                   dict[str, int]]:
    """Rotating timed runs of every variant; seconds per run, and ledger rows per variant."""
    runners, accounts = variants(latency)
    for _ in range(warmup):  # imports, tiktoken's table, LangGraph's first-run caches
        for v in VARIANTS:
            runners[v]()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(runs):
        k = i % len(VARIANTS)  # rotate the order so no variant always runs first
        for v in VARIANTS[k:] + VARIANTS[:k]:
            t0 = time.perf_counter()
            runners[v]()
            times[v].append(time.perf_counter() - t0)
    rows = {v: len(a.entries()) for v, a in accounts.items()}
    for v, n in rows.items():
        assert n == CALLS * (warmup + runs), (v, n)  # every call is one row, none twice
    return times, rows


NAMES = {"bare": "bare app", "handler": "+ callback handler",
         "budgeted": "+ budgeted model (and handler)"}


def report(title: str, times: dict[str, list[float]], per: int) -> dict[str, tuple[float, float]]:
    """Print one measurement; returns (ratio of means, median overhead ms per call): the
    median, since a few slow runs (a collection, another process) move the zero-latency
    means by more than the instrumentation costs."""
    print(title)
    mb, medb = statistics.fmean(times["bare"]), statistics.median(times["bare"])
    out = {}
    for v in VARIANTS:
        m, med = statistics.fmean(times[v]), statistics.median(times[v])
        line = f"  {NAMES[v]:<32} mean {m * 1000:8.2f} ms  median {med * 1000:8.2f} ms"
        if v != "bare":
            extra, extra_med = (m - mb) / per * 1000, (med - medb) / per * 1000
            out[v] = (m / mb, extra_med)
            line += (f"  ratio {m / mb:.4f}x (median {med / medb:.4f}x), "
                     f"{extra:+.2f} ms per call (median {extra_med:+.2f})")
        print(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs of each variant")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per model call")
    parser.add_argument("--cpu-runs", type=int, default=200,
                        help="timed runs of each variant at zero latency")
    args = parser.parse_args()
    configure_logging(level="warning")  # as a user would; llm.call events are info

    load = os.getloadavg()
    print(f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    cpu, _ = measure(0.0, args.cpu_runs)
    cost = report(f"zero latency (CPU only), {args.cpu_runs} runs each, {CALLS} calls/run; "
                  f"per call = difference / {CALLS}:", cpu, CALLS)
    times, rows = measure(args.latency, args.runs)
    floor = SUPERSTEPS * args.latency * 1000
    wall = report(f"latency {args.latency * 1000:.0f} ms/call, {args.runs} runs each "
                  f"(model time on the critical path {floor:.0f} ms/run); per call = "
                  f"difference / {SUPERSTEPS} supersteps:", times, SUPERSTEPS)
    print(f"  ledger rows: {rows} ({CALLS} per run, warm-up included)")
    worst = max(r for r, _ in wall.values())
    verdict = "meets" if worst <= TARGET else "MISSES"
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"SUMMARY instrument: handler {wall['handler'][0]:.3f}x, budgeted "
          f"{wall['budgeted'][0]:.3f}x mean wall time vs the bare app at "
          f"{args.latency * 1000:.0f} ms per call ({verdict} target <= {TARGET}x); CPU "
          f"{cost['handler'][1]:.2f} / {cost['budgeted'][1]:.2f} ms per call (medians) "
          f"(load {load[0]:.1f})")


if __name__ == "__main__":
    main()
