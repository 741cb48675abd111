"""Fault matrix: whole runs with parallel branches against the loopback fake server.

Every fault kind the server can inject is sent at least once (queued first), then 20% of the
requests get a random one. Several runs go concurrently through two clients sharing one
ledger: a patient one (4 attempts) and an impatient one (2 attempts), so some logical calls
give up and the runs must absorb that. Afterwards:

* every run completes, and every call that finally failed is named in its notes or stop
  reason (a clear recorded reason, never a silent gap);
* the ledger equals what the server sent, call by call (rows matched to the server's records
  by ``request_id``): provider rows carry exactly the usage sent, estimate rows exist only
  for whole replies without usage, replies generated but lost (malformed, cut, timed out)
  are charged an upper bound flagged ``bound``, the provider tokens sum to the server's own
  count, and the ledger's total is at least what the server billed;
* each run's budget spent what its ledger rows say, with nothing left reserved;
* a ``Retry-After`` was honoured before the retry that followed it.

``tests/agents/test_faults.py`` covers each fault on one call; this is the mix, in graphs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from stratagem.agents import (
    JUDGE_POINTWISE_PROMPT,
    LLMJudge,
    LLMSolver,
    ModelClient,
    OpenAIBackend,
    RetryPolicy,
    Solution,
    Verdict,
)
from stratagem.budgets import Budget, LedgerEntry, TokenLedger
from stratagem.errors import RunError
from stratagem.graphs import RunContext, RunResult, arun, best_of_n, refine, single
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault, RequestRecord

RETRY_AFTER_S = 0.05
CLIENT_TIMEOUT_S = 1.0  # well above a loaded machine's latency: only timeout faults time out

FAULTS: tuple[Fault, ...] = (
    Fault.rate_limit(retry_after=RETRY_AFTER_S),
    Fault.server_error(500),
    Fault.server_error(503),
    Fault.timeout(seconds=3.0),
    Fault.malformed_json(),
    Fault.missing_usage(),
    Fault.stream_cut(after_chunks=1),
    Fault.stream_cut(keep_usage=True),
    Fault.context_length(),
)

# Faults whose response the client cannot tie to a request id: nothing came back (timeout),
# or a non-streamed body was cut. (A malformed body keeps its id: its headers were read.)
_NO_ID_OK = {"timeout", "stream_cut"}


def role_responder(body: dict[str, Any]) -> FakeReply:
    """A judge verdict for judge prompts, an answer otherwise (common one-token words, so a
    tiktoken estimate stays close to the fake server's word count)."""
    if body["messages"][0].get("content") == JUDGE_POINTWISE_PROMPT.system:
        return FakeReply("the steps are right\nSCORE: 0.9\nVERDICT: accept", cached_tokens=2)
    return FakeReply("six times seven is forty two\nAnswer: 42")


class StreamingSolver(LLMSolver):
    """The default solver, streaming its replies."""

    async def solve(self, client: ModelClient, task: str, **kw: Any) -> Solution:
        return await super().solve(client, task, stream=True, **kw)


class StreamingJudge(LLMJudge):
    """The default judge, streaming its replies."""

    async def score(self, client: ModelClient, task: str, candidate: str,
                    **kw: Any) -> Verdict:
        return await super().score(client, task, candidate, stream=True, **kw)


@dataclass
class MatrixRun:
    run_id: str
    budget: Budget
    outcome: RunResult | BaseException | None = None


def _graph(i: int) -> Any:
    return (best_of_n(4, select="judge"), best_of_n(3, select="vote"), refine(2),
            single())[i % 4]


def _run_matrix(seed: int, n_runs: int) -> tuple[list[MatrixRun], list[LedgerEntry],
                                                  list[RequestRecord], FakeOpenAIServer]:
    with FakeOpenAIServer(role_responder, fault_rate=0.2, faults=FAULTS, seed=seed) as srv:
        srv.enqueue_faults(FAULTS)  # every kind at least once, whatever the draws
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="sk-matrix-0000000",
                                backend="vllm", timeout_s=CLIENT_TIMEOUT_S)
        ledger = TokenLedger()
        limits = {backend.endpoint: 8}
        patient = ModelClient(backend, ledger=ledger, concurrency=limits, seed=seed,
                              retry=RetryPolicy(max_attempts=4, initial_delay_s=0.001,
                                                max_delay_s=0.005))
        impatient = ModelClient(backend, ledger=ledger, concurrency=limits, seed=seed,
                                retry=RetryPolicy(max_attempts=2, initial_delay_s=0.001,
                                                  max_delay_s=0.005))
        runs = [MatrixRun(f"m{seed}-{i}", Budget(total=50_000, roles={"solver": 40_000,
                                                                      "judge": 10_000}))
                for i in range(n_runs)]

        async def one(i: int, mr: MatrixRun) -> None:
            stream = i % 2 == 1
            ctx = RunContext(
                client=impatient if i % 3 == 0 else patient, budget=mr.budget,
                solver=StreamingSolver() if stream else LLMSolver(),
                judge=StreamingJudge() if stream else LLMJudge(),
            )
            try:
                mr.outcome = await arun(_graph(i), f"task {i}: what is 6*7?", context=ctx,
                                        run_id=mr.run_id)
            except Exception as exc:  # judged below: only a clear RunError is acceptable
                mr.outcome = exc

        async def main() -> None:
            try:
                await asyncio.wait_for(asyncio.gather(*(one(i, r) for i, r in enumerate(runs))),
                                       timeout=60)
            finally:
                await backend.aclose()

        asyncio.run(main())
        records = [r for r in srv.log if r.path.endswith("/chat/completions")]
    return runs, ledger.entries(), records, srv


def _logical_calls(rows: Sequence[LedgerEntry]) -> list[list[LedgerEntry]]:
    """Rows grouped into logical calls: same run, task, role, node and branch; a new call
    starts at attempt 1 (a structured reply's repair is a second call of the same node)."""
    groups: dict[tuple[object, ...], list[list[LedgerEntry]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.started_at):
        key = (row.run_id, row.task_id, row.role, row.node, row.branch)
        if row.attempt == 1 or not groups[key]:
            groups[key].append([])
        groups[key][-1].append(row)
    return [call for calls in groups.values() for call in calls]


def _reconcile(rows: Sequence[LedgerEntry], records: Sequence[RequestRecord],
               srv: FakeOpenAIServer) -> None:
    by_id = {r.request_id: r for r in records}
    assert len({r.request_id for r in records}) == len(records)
    with_id = [r for r in rows if r.request_id is not None]
    ids = [r.request_id for r in with_id]
    assert len(ids) == len(set(ids)), "one server response recorded twice"
    assert not [r for r in rows if r.status == "cancelled"], "no branch should be cancelled"
    for row in with_id:
        rec = by_id.get(row.request_id)
        assert rec is not None, f"row {row.call_id} names a request the server never got"
        fault = rec.fault.kind if rec.fault else None
        if rec.usage is not None:  # the server sent usage: the row carries exactly that
            assert row.usage_source == "provider", (row, rec)
            assert (row.prompt_tokens, row.completion_tokens) == (
                rec.usage.prompt_tokens, rec.usage.completion_tokens), (row, rec)
            assert row.cached_tokens == rec.usage.cached_tokens
            assert row.reasoning_tokens == rec.usage.reasoning_tokens
            assert row.status == ("error" if fault == "stream_cut" else "ok"), (row, rec)
        elif row.usage_source == "estimate":  # flagged, and only a whole reply without usage
            assert row.status == "ok" and fault == "missing_usage", (row, rec)
        elif row.usage_source == "bound":  # generated, then lost: the upper bound, never 0
            assert row.status == "error", (row, rec)
            assert fault in ("stream_cut", "malformed_json", "timeout"), (row, rec)
            assert rec.billed is None or row.completion_tokens >= rec.billed.completion_tokens
            assert row.completion_tokens >= (row.cap_sent or 0), (row, rec)
        else:  # an error status, refused before anything was generated: charged nothing
            assert row.status == "error" and row.total_tokens == 0, (row, rec)
            assert row.usage_source == "none", (row, rec)
            assert fault in ("rate_limit", "server_error", "context_length"), (row, rec)
            assert rec.billed is None, (row, rec)
    # Failed attempts whose response never reached the client carry no id: a timeout (the
    # server took the request, so an upper bound), never a request the server billed and
    # the ledger forgot.
    no_id = [r for r in rows if r.request_id is None]
    for row in no_id:
        assert row.status == "error" and row.usage_source == "bound", row
    seen = set(ids)
    unmatched = [r for r in records if r.request_id not in seen]
    assert len(unmatched) == len(no_id), "every request has exactly one ledger row"
    for rec in unmatched:
        assert rec.fault is not None and rec.fault.kind in _NO_ID_OK, rec
        assert rec.usage is None
    # Never undercount: the ledger charges at least what the server billed (generated,
    # delivered or not), and every row's source is flagged.
    billed = srv.billed_usage_totals()
    assert sum(r.total_tokens for r in rows) >= billed.prompt_tokens + billed.completion_tokens
    assert {r.usage_source for r in rows} <= {"provider", "estimate", "bound", "none"}
    # The server's own count, summed, equals the provider rows of the ledger.
    sent = srv.sent_usage_totals()
    provider = [r for r in rows if r.usage_source == "provider"]
    assert sum(r.prompt_tokens for r in provider) == sent.prompt_tokens
    assert sum(r.completion_tokens for r in provider) == sent.completion_tokens
    assert sum(r.cached_tokens or 0 for r in provider) == (sent.cached_tokens or 0)


def _check_outcomes(runs: Sequence[MatrixRun], rows: Sequence[LedgerEntry]) -> int:
    """Every run ended with a clear reason; returns how many logical calls gave up."""
    gave_up = 0
    by_run: dict[str, list[LedgerEntry]] = defaultdict(list)
    for row in rows:
        by_run[row.run_id].append(row)
    for mr in runs:
        if isinstance(mr.outcome, BaseException):
            assert isinstance(mr.outcome, RunError) and str(mr.outcome), repr(mr.outcome)
            continue
        assert isinstance(mr.outcome, RunResult), mr
        result = mr.outcome
        assert result.stop_reason, mr.run_id
        recorded = [*result.notes, result.stop_reason]
        failed = [call for call in _logical_calls(by_run[mr.run_id])
                  if call[-1].status == "error"]

        def named(call: list[LedgerEntry], recorded: list[str] = recorded) -> bool:
            last = call[-1].error or ""
            return bool(last) and any(last in text for text in recorded)

        for call in failed:
            gave_up += 1
            # Named itself, or (concurrent judge calls of one node) a sibling of the same
            # node is: the node reports its first failure only; that it also drops its
            # siblings' verdicts is pinned in test_fault_edges.py.
            siblings = [c for c in failed if c[-1].task_id == call[-1].task_id]
            assert any(named(c) for c in siblings), (
                f"{mr.run_id}: a {call[-1].role} call gave up ({call[-1].error!r}) but the "
                f"run recorded only {recorded!r}")
        if not failed:
            assert not result.stop_reason.startswith("model failed"), result.stop_reason
        # Budget and ledger agree, and nothing is left reserved.
        assert mr.budget.spent() == sum(r.total_tokens for r in by_run[mr.run_id])
        assert mr.budget.reserved() == 0
        assert result.billed.total_tokens == mr.budget.spent()
    return gave_up


def _check_retry_after(rows: Sequence[LedgerEntry], records: Sequence[RequestRecord]) -> int:
    by_id = {r.request_id: r for r in records}
    honoured = 0
    for call in _logical_calls(rows):
        for row, nxt in itertools.pairwise(call):
            rec = by_id.get(row.request_id or "")
            if rec is not None and rec.fault is not None and rec.fault.kind == "rate_limit":
                waited = (nxt.started_at - row.started_at).total_seconds()
                assert waited >= RETRY_AFTER_S * 0.95, (row, nxt, waited)
                honoured += 1
    return honoured


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_fault_matrix_runs_finish_and_the_ledger_matches_the_server(seed: int) -> None:
    runs, rows, records, srv = _run_matrix(seed, n_runs=24)

    kinds = {r.fault.kind for r in records if r.fault is not None}
    assert kinds == {f.kind for f in FAULTS}, "every fault kind was exercised"
    faulted = sum(1 for r in records if r.fault is not None) - len(FAULTS)
    assert 0.08 < faulted / (len(records) - len(FAULTS)) < 0.35  # about the 20% asked for
    assert sum(1 for r in records if r.stream) > 0 and sum(1 for r in records if not r.stream)

    _reconcile(rows, records, srv)
    gave_up = _check_outcomes(runs, rows)
    assert gave_up >= 1, "the impatient client should have given up on something"
    assert _check_retry_after(rows, records) >= 1
    assert sum(1 for mr in runs if isinstance(mr.outcome, RunResult)) == len(runs)
