"""Fault injection against the loopback fake server: the ledger equals what the server sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from stratagem.agents import ModelClient, OpenAIBackend, RetryPolicy
from stratagem.budgets import Budget, LedgerEntry
from stratagem.errors import BudgetExceeded, ContextLengthExceeded, ModelError
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault, RequestRecord

MSG = [{"role": "user", "content": "name a fruit"}]
FAST = RetryPolicy(max_attempts=4, initial_delay_s=0.001, max_delay_s=0.005)


def _client(srv: FakeOpenAIServer, **kw: object) -> ModelClient:
    backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="sk-test-key-123456",
                            backend=str(kw.pop("backend", "vllm")), timeout_s=0.5,
                            transport=str(kw.pop("transport", "direct")))
    return ModelClient(backend, retry=kw.pop("retry", FAST), **kw)  # type: ignore[arg-type]


def _chat_records(srv: FakeOpenAIServer) -> list[RequestRecord]:
    return [r for r in srv.log if r.path.endswith("/chat/completions")]


def _reconcile(rows: list[LedgerEntry], records: list[RequestRecord]) -> None:
    """Attempt by attempt: provider rows equal what the server sent; a reply the server
    generated but that did not arrive whole is charged at least what it billed (flagged
    ``bound``, never zero); an attempt that generated nothing sent nothing."""
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        if rec.usage is not None:
            assert row.usage_source == "provider"
            assert (row.prompt_tokens, row.completion_tokens) == (
                rec.usage.prompt_tokens, rec.usage.completion_tokens)
            assert row.cached_tokens == rec.usage.cached_tokens
            assert row.reasoning_tokens == rec.usage.reasoning_tokens
        elif row.status == "ok" or row.usage_source == "estimate":
            assert row.usage_source == "estimate"  # the server sent none: flagged, not faked
        elif rec.billed is not None or (rec.fault is not None and rec.fault.kind == "timeout"):
            # lost after the server (may have) billed it: an upper bound, flagged
            assert row.usage_source == "bound" and row.status == "error"
            assert row.completion_tokens >= (rec.billed.completion_tokens if rec.billed else 0)
            assert row.completion_tokens == row.cap_sent
        else:
            assert row.total_tokens == 0 and row.usage_source == "none"


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limit(retry_after=0.01),
        Fault.server_error(500),
        Fault.server_error(503),
        Fault.timeout(seconds=2.0),
        Fault.malformed_json(),
        Fault.stream_cut(after_chunks=1),
    ],
    ids=lambda f: f.kind,
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("transport", ["direct", "aiohttp", "httpx2"])
def test_each_transient_fault_is_retried_and_reconciled(fault: Fault, stream: bool,
                                                        transport: str) -> None:
    with FakeOpenAIServer(lambda body: FakeReply("a ripe banana", cached_tokens=2)) as srv:
        srv.enqueue_faults([fault])
        client = _client(srv, transport=transport)
        done = client.complete_sync(MSG, role="solver", stream=stream)
        records = _chat_records(srv)
    rows = client.ledger.entries()
    assert done.text == "a ripe banana"
    assert [r.status for r in rows] == ["error", "ok"]
    assert len(records) == 2  # one retry, in one layer only
    _reconcile(rows, records)
    assert rows[-1].request_id == records[-1].request_id


def test_stream_cut_after_usage_is_charged_as_sent() -> None:
    with FakeOpenAIServer(lambda body: FakeReply("some words here")) as srv:
        srv.enqueue_faults([Fault.stream_cut(after_chunks=1, keep_usage=True)])
        client = _client(srv)
        client.complete_sync(MSG, role="solver", stream=True)
        records = _chat_records(srv)
    rows = client.ledger.entries()
    assert rows[0].status == "error" and rows[0].total_tokens > 0
    _reconcile(rows, records)


def test_stream_cut_without_usage_charges_a_flagged_upper_bound() -> None:
    with FakeOpenAIServer(lambda body: FakeReply("one two three four five six")) as srv:
        srv.enqueue_faults([Fault.stream_cut(after_chunks=2)])
        client = _client(srv)
        client.complete_sync(MSG, role="solver", max_output=40, stream=True)
        (billed, _) = [r.billed for r in _chat_records(srv)]
    first = client.ledger.entries()[0]
    assert first.status == "error" and first.usage_source == "bound"
    # the prompt as counted, the completion at the cap sent: never below what was billed
    assert first.prompt_tokens > 0 and first.completion_tokens == first.cap_sent == 40
    assert billed is not None and first.completion_tokens >= billed.completion_tokens


def test_missing_usage_is_estimated_and_flagged() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.missing_usage()])
        client = _client(srv)
        done = client.complete_sync(MSG, role="solver")
        (record,) = _chat_records(srv)
    assert record.usage is None
    assert done.entry.usage_source == "estimate" and done.entry.status == "ok"


def test_retry_after_is_honoured() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.rate_limit(retry_after=0.3)])
        client = _client(srv)
        t0 = time.monotonic()
        client.complete_sync(MSG, role="solver")
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.3


def test_context_overflow_is_clear_and_not_retried() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.context_length()])
        client = _client(srv)
        with pytest.raises(ContextLengthExceeded, match="shorten the prompt"):
            client.complete_sync(MSG, role="solver")
        assert len(_chat_records(srv)) == 1
    assert [r.status for r in client.ledger.entries()] == ["error"]


def test_persistent_failure_gives_up_with_every_attempt_recorded() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.server_error(502)] * 4)
        client = _client(srv)
        with pytest.raises(ModelError, match="gave up after 4"):
            client.complete_sync(MSG, role="solver")
        assert len(_chat_records(srv)) == 4
    assert client.ledger.totals().error_calls == 4


@pytest.mark.parametrize(
    ("backend", "field"),
    [("openai", "max_completion_tokens"), ("llama-cpp-python", "max_tokens"),
     ("ollama", "max_tokens")],
)
def test_output_cap_goes_in_the_field_the_backend_honours(backend: str, field: str) -> None:
    with FakeOpenAIServer(lambda body: FakeReply("w " * 50), honours=(field,)) as srv:
        client = _client(srv, backend=backend)
        done = client.complete_sync(MSG, role="solver", max_output=5)
        (record,) = _chat_records(srv)
    assert record.body is not None and record.body[field] == 5
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert not other & set(record.body)
    assert done.usage.completion_tokens == 5 and done.finish_reason == "length"


def test_cached_and_reasoning_tokens_are_subsets_and_unknown_stays_unknown() -> None:
    replies = iter([FakeReply("x y", cached_tokens=4, reasoning_tokens=1), FakeReply("z")])
    with FakeOpenAIServer(lambda body: next(replies)) as srv:
        client = _client(srv, backend="openai")
        client.complete_sync(MSG, role="solver")
        client.complete_sync(MSG, role="solver")
        _reconcile(client.ledger.entries(), _chat_records(srv))
    first, second = client.ledger.entries()
    assert first.cached_tokens == 4 and first.reasoning_tokens == 1
    assert second.cached_tokens is None and second.reasoning_tokens is None
    totals = client.ledger.totals()
    assert totals.cached_tokens == 4 and totals.cached_unknown == 1


def test_fault_matrix_in_parallel_keeps_budget_and_ledger_exact() -> None:
    """20% random faults over 40 concurrent calls sharing one budget."""
    budget = Budget(total=4000, roles={"solver": 1500, "judge": 1500})
    kinds = [Fault.rate_limit(retry_after=0.01), Fault.server_error(500),
             Fault.malformed_json(), Fault.missing_usage(), Fault.stream_cut(after_chunks=1)]
    with FakeOpenAIServer(lambda body: FakeReply("alpha beta gamma delta"), fault_rate=0.2,
                          faults=kinds, seed=7) as srv:
        client = _client(srv, budget=budget, concurrency={srv.base_url.rstrip("/"): 8})

        async def one(i: int) -> str:
            role = "solver" if i % 2 else "judge"
            try:
                done = await client.complete(MSG, role=role, branch=str(i), max_output=20,
                                             stream=i % 3 == 0)
            except BudgetExceeded:
                return "budget"
            except ModelError:
                return "failed"
            return done.entry.status

        async def main() -> list[str]:
            try:
                return list(await asyncio.gather(*(one(i) for i in range(40))))
            finally:
                await client.aclose()

        outcomes = asyncio.run(main())
        records = _chat_records(srv)
    rows = client.ledger.entries()
    assert set(outcomes) <= {"ok", "budget", "failed"} and "ok" in outcomes
    assert len(rows) == len(records)
    by_id = {r.request_id: r for r in records}
    for row in rows:  # concurrent: match by the server's request id where one came back
        rec = by_id.get(row.request_id) if row.request_id else None
        if rec is not None and rec.usage is not None:
            assert (row.prompt_tokens, row.completion_tokens) == (
                rec.usage.prompt_tokens, rec.usage.completion_tokens)
    provider_rows = [r for r in rows if r.usage_source == "provider"]
    sent = srv.sent_usage_totals()
    assert sum(r.total_tokens for r in provider_rows) == sent.total_tokens
    for role in ("solver", "judge"):
        assert budget.spent(role) == client.ledger.totals(role=role).total_tokens <= 1500
    assert budget.reserved() == 0
