"""Budget hammer: many concurrent runs share one budget under faults and never exceed a cap.

Runs of several topologies (parallel branches, judges, pairwise tournaments, refinement) go at
once through one :class:`~stratagem.budgets.Budget` with token caps (run total and per role)
and dollar caps, from two event loops in two threads, against the loopback fake server with
20% random faults. The budget must bind (runs stop gracefully, "budget exhausted") and, at the
end, every scope has spent no more than its cap, nothing is left reserved, and the budget's
spend equals the ledger's rows, tokens and dollars.

Usage-less replies (``missing_usage``) are in the mix: their tiktoken estimate is clamped to
the output cap the server honoured (``test_fault_edges.py`` pins that on one call).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from stratagem.agents import (
    JUDGE_PAIRWISE_PROMPT,
    JUDGE_POINTWISE_PROMPT,
    LLMSolver,
    ModelClient,
    OpenAIBackend,
    RetryPolicy,
)
from stratagem.budgets import Budget, ModelPrice, Pricing, TokenLedger
from stratagem.graphs import RunContext, RunResult, arun, best_of_n, refine, single
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault

# Replies of (mostly) one-token words: for cl100k, tiktoken's count of the words a cut stream
# delivered equals the fake server's, so its flagged estimate stays within the reservation.
SOLVER_REPLY = " ".join(["one", "two", "three", "four", "five", "six", "seven", "eight"] * 25)
POINTWISE_REPLY = "the score 9"
PAIRWISE_REPLY = "the winner a"

FAULTS = (
    Fault.rate_limit(retry_after=0.01),
    Fault.server_error(500),
    Fault.timeout(seconds=1.0),
    Fault.malformed_json(),
    Fault.missing_usage(),
    Fault.stream_cut(after_chunks=1),
    Fault.stream_cut(keep_usage=True),
)
PRICING = Pricing({"fake-model": ModelPrice(input=10.0, output=30.0)})


def _responder(body: dict[str, Any]) -> FakeReply:
    system = body["messages"][0].get("content")
    if system == JUDGE_POINTWISE_PROMPT.system:
        return FakeReply(POINTWISE_REPLY)
    if system == JUDGE_PAIRWISE_PROMPT.system:
        return FakeReply(PAIRWISE_REPLY)
    return FakeReply(SOLVER_REPLY)


def _graphs() -> list[Any]:
    return [best_of_n(4, select="judge"), best_of_n(3, select="knockout"), refine(3),
            best_of_n(4, select="vote"), single()]


def _hammer(budget: Budget, *, seed: int, runs_per_loop: int, loops: int) -> tuple[
        list[RunResult | BaseException], TokenLedger]:
    results: list[RunResult | BaseException] = []
    lock = threading.Lock()
    with FakeOpenAIServer(_responder, fault_rate=0.2, faults=FAULTS, seed=seed) as srv:
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="sk-hammer-0000000",
                                backend="vllm", timeout_s=0.2)
        ledger = TokenLedger()
        client = ModelClient(backend, ledger=ledger, pricing=PRICING, seed=seed,
                             concurrency={backend.endpoint: 16},
                             retry=RetryPolicy(max_attempts=3, initial_delay_s=0.001,
                                               max_delay_s=0.005))
        graphs = _graphs()

        def loop(k: int) -> None:
            async def one(i: int) -> RunResult | BaseException:
                # Staggered starts: early runs contend in parallel, late ones drain what is
                # left, so spend ends up against the caps rather than short of them.
                await asyncio.sleep(0.03 * i)
                ctx = RunContext(client=client, budget=budget, seed=i,
                                 solver=LLMSolver(max_output=48))
                try:
                    return await arun(graphs[i % len(graphs)], f"loop {k} task {i}: 6*7?",
                                      context=ctx, run_id=f"h{k}-{i}")
                except Exception as exc:  # judged by the test: there should be none
                    return exc

            async def main() -> list[RunResult | BaseException]:
                try:
                    return list(await asyncio.wait_for(
                        asyncio.gather(*(one(i) for i in range(runs_per_loop))), timeout=60))
                finally:
                    await client.aclose()

            out = asyncio.run(main())
            with lock:
                results.extend(out)

        threads = [threading.Thread(target=loop, args=(k,)) for k in range(loops)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        assert not any(t.is_alive() for t in threads), "a hammer loop hung"
    return results, ledger


def _assert_caps_held(budget: Budget, ledger: TokenLedger, caps_usd: dict[str, float]) -> None:
    snapshot = budget.snapshot()
    for scope, s in snapshot.items():
        assert s["reserved"] == 0, f"{scope}: reservations leaked: {s}"
        if s["limit"] is not None:
            assert s["spent"] <= s["limit"], f"{scope} overspent: {s}"
    rows = ledger.entries()
    assert budget.spent() == sum(r.total_tokens for r in rows)
    for role in ("solver", "judge"):
        assert budget.spent(role) == sum(r.total_tokens for r in rows if r.role == role)
    for scope, cap in caps_usd.items():
        spent = budget.spent_usd(None if scope == "total" else scope)
        assert spent <= cap + 1e-12, f"{scope} overspent in dollars: {spent} > {cap}"
    costs = [r.cost_usd for r in rows]
    assert all(c is not None for c in costs)
    assert math.isclose(budget.spent_usd(), sum(c or 0.0 for c in costs), abs_tol=1e-12)


def _assert_graceful(results: Sequence[RunResult | BaseException], expected: int) -> None:
    assert len(results) == expected
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"runs raised instead of stopping gracefully: {errors[:3]!r}"
    stopped = [r for r in results if isinstance(r, RunResult)
               and r.stop_reason.startswith("budget exhausted")]
    assert stopped, "the shared budget never bound: the hammer proved nothing"


@pytest.mark.parametrize(
    ("total", "roles", "total_usd", "roles_usd"),
    [
        (9_000, {"solver": 6_000, "judge": 2_000}, None, None),   # the role caps bind
        (5_000, {"solver": 4_000, "judge": 2_000}, None, None),   # the run total binds
        (None, {"solver": 20_000, "judge": 8_000}, 0.04, {"judge": 0.01}),  # dollars bind
    ],
    ids=["roles-bind", "total-binds", "usd-binds"],
)
def test_concurrent_runs_sharing_one_budget_never_exceed_a_cap(
    total: int | None, roles: dict[str, int], total_usd: float | None,
    roles_usd: dict[str, float] | None,
) -> None:
    budget = Budget(total=total, roles=roles, total_usd=total_usd, roles_usd=roles_usd,
                    pricing=PRICING)
    results, ledger = _hammer(budget, seed=len(roles) + (total or 0), runs_per_loop=20, loops=2)
    _assert_graceful(results, 40)
    caps_usd = {**({"total": total_usd} if total_usd is not None else {}), **(roles_usd or {})}
    _assert_caps_held(budget, ledger, caps_usd)
    # Here every estimate stays within its reservation (one-token words; a usage-less reply is
    # clamped to its cap) and every provider prompt is below its tiktoken estimate, so not
    # even the input-estimate overshoot the design allows occurs.
    assert budget.overshoot_tokens == 0
    assert ledger.totals().error_calls > 0, "no fault reached the ledger"
