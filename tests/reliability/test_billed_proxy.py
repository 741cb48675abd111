"""Integration: the ledger against what the embedded llama.cpp server really billed.

A :class:`~stratagem.testing.UsageProxy` sits between the client and the real server: it
forwards every request that an error fault does not refuse, records the server's own usage of
every reply the server generated (delivered or not), and injects each fault kind (429, 500,
timeout, malformed, no usage, cut stream), streaming and not. Direct ``complete`` calls get
every kind once per mode, then two ``best_of_n`` runs (one streaming) get random faults.

Asserted, against the proxy's record of each request:

* every row's ``usage_source`` says what happened: ``provider`` exactly the usage delivered,
  ``estimate`` only for a whole reply without usage, ``bound`` only for a reply the server
  generated and the client lost (timeout, malformed, cut), ``none`` at 0 only for a refused
  request (429/500) that generated nothing; every request has one row;
* the ledger's total is at least the server's billed total (never undercount);
* the excess is the slack of the upper bounds, and nothing else: ledger - billed equals the
  sum over ``bound`` rows of (charged - billed) plus the estimate rows' tokenizer error, and
  each bound row's completion slack is at most ``cap_sent`` - actual.

The measured figures (per fault kind and overall) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from stratagem.agents import (
    SOLVER_PROMPT,
    LLMSolver,
    LocalModelServer,
    ModelClient,
    OpenAIBackend,
    RetryPolicy,
    Solution,
)
from stratagem.budgets import Budget, LedgerEntry, TokenLedger
from stratagem.errors import ModelError
from stratagem.graphs import RunContext, RunResult, arun, best_of_n
from stratagem.testing import Fault, RequestRecord, UsageProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAP = 32
"""Output cap of every call: small, so the matrix is quick on two cores."""
IMPATIENT_TIMEOUT_S = 2.0
"""The client timeout of the calls that get a ``timeout`` fault (one attempt each). Every
other call waits as long as the SDK's default (a loaded machine can be slow)."""

FAULTS: tuple[Fault, ...] = (
    Fault.rate_limit(retry_after=0.01),
    Fault.server_error(500),
    Fault.timeout(seconds=25.0),  # held until the client hangs up
    Fault.malformed_json(),
    Fault.missing_usage(),
    Fault.stream_cut(after_chunks=2),
)
RANDOM_FAULTS = tuple(f for f in FAULTS if f.kind != "timeout")  # (each costs a client timeout)
TASKS = ("What is 3 + 4?", "Name a word that starts with the letter b.",
         "What is 9 - 5?", "Name an animal that lives in the sea.")

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StreamingSolver(LLMSolver):
    """The default solver, streaming its replies."""

    async def solve(self, client: ModelClient, task: str, **kw: Any) -> Solution:
        return await super().solve(client, task, stream=True, **kw)


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalModelServer]:
    if importlib.util.find_spec("llama_cpp") is None:  # importing it opens /dev/null
        pytest.skip("needs the `local` extra")
    with LocalModelServer(n_ctx=2048) as srv:
        # The first reply of a fresh server is slow (weights paged in): not through the
        # proxy, so that no client timeout can come of it.
        body = {"model": srv.model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hello"}]}
        request = urllib.request.Request(f"{srv.base_url}/chat/completions",
                                         data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
        with _NO_PROXY.open(request, timeout=120) as response:
            json.load(response)
        yield srv


def _kind(record: RequestRecord) -> str:
    return record.fault.kind if record.fault is not None else "ok"


def _pair(rows: Sequence[LedgerEntry], records: Sequence[RequestRecord]
          ) -> list[tuple[LedgerEntry, RequestRecord]]:
    """Each row with the request it was: by request id, and (calls go one at a time to this
    endpoint) in order for the attempts that got no response to take an id from."""
    by_id = {r.request_id: r for r in records}
    assert len(by_id) == len(records)
    pairs = [(row, by_id[row.request_id]) for row in rows if row.request_id is not None]
    assert len({row.request_id for row, _ in pairs}) == len(pairs), "a response recorded twice"
    seen = {rec.request_id for _, rec in pairs}
    no_id = sorted((r for r in rows if r.request_id is None), key=lambda r: r.started_at)
    unmatched = [r for r in records if r.request_id not in seen]
    assert len(no_id) == len(unmatched), "every request has exactly one ledger row"
    pairs += zip(no_id, unmatched, strict=True)
    return pairs


def _check_flag(row: LedgerEntry, rec: RequestRecord) -> None:
    kind = _kind(rec)
    if rec.usage is not None:  # usage was delivered: the row is exactly that
        assert row.usage_source == "provider", (row, rec)
        assert (row.prompt_tokens, row.completion_tokens) == (
            rec.usage.prompt_tokens, rec.usage.completion_tokens), (row, rec)
        assert rec.billed == rec.usage
        assert row.status == "ok"
        return
    if kind == "missing_usage":  # a whole reply without usage: tiktoken counted its text
        assert (row.usage_source, row.status) == ("estimate", "ok"), (row, rec)
        assert rec.billed is not None
        return
    if kind in ("timeout", "malformed_json", "stream_cut"):  # generated, then lost
        assert (row.usage_source, row.status) == ("bound", "error"), (row, rec)
        assert rec.billed is not None, "the proxy forwarded it: the server generated it"
        assert row.cap_sent == CAP
        assert row.completion_tokens == CAP >= rec.billed.completion_tokens, (row, rec)
        return
    assert kind in ("rate_limit", "server_error"), (row, rec)  # refused, nothing generated
    assert (row.usage_source, row.status, row.total_tokens) == ("none", "error", 0), (row, rec)
    assert rec.billed is None


def _figures(pairs: Sequence[tuple[LedgerEntry, RequestRecord]]) -> dict[str, tuple[int, int]]:
    """(ledger tokens, billed tokens) per fault kind of the request, and ``all``."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, rec in pairs:
        billed = rec.billed.total_tokens if rec.billed is not None else 0
        for key in (_kind(rec), "all"):
            sums[key][0] += row.total_tokens
            sums[key][1] += billed
    return {k: (v[0], v[1]) for k, v in sums.items()}


def _report(figures: dict[str, tuple[int, int]], pairs: Sequence[tuple[LedgerEntry,
                                                                         RequestRecord]]) -> str:
    lines = [f"{'fault':<16}{'requests':>9}{'ledger':>8}{'billed':>8}{'ratio':>8}"]
    for kind in sorted(figures, key=lambda k: (k == "all", k)):
        ledger, billed = figures[kind]
        n = sum(1 for _, rec in pairs if kind in (_kind(rec), "all"))
        ratio = f"{ledger / billed:.3f}" if billed else "-"
        lines.append(f"{kind:<16}{n:>9}{ledger:>8}{billed:>8}{ratio:>8}")
    return "\n".join(lines)


def test_ledger_is_at_least_what_the_server_billed_and_every_row_is_flagged(
        upstream: LocalModelServer) -> None:
    with UsageProxy(upstream.base_url, model=upstream.model, faults=RANDOM_FAULTS,
                    seed=26) as proxy:  # (a seed whose draws fault the runs' requests too)
        backend = OpenAIBackend(upstream.model, base_url=proxy.base_url, api_key="local",
                                backend="llama-cpp-python")
        impatient_backend = OpenAIBackend(upstream.model, base_url=proxy.base_url,
                                          api_key="local", backend="llama-cpp-python",
                                          timeout_s=IMPATIENT_TIMEOUT_S)
        ledger = TokenLedger()
        client = ModelClient(backend, ledger=ledger, seed=19,
                             retry=RetryPolicy(max_attempts=4, initial_delay_s=0.01,
                                               max_delay_s=0.02))
        impatient = ModelClient(impatient_backend, ledger=ledger,
                                retry=RetryPolicy(max_attempts=1))
        results: list[RunResult] = []

        async def main() -> None:
            try:
                # Every fault kind once per mode, on direct calls: each call's first attempt
                # gets the fault, its retry a normal reply. A timeout fault goes to a client
                # that gives up after one short attempt (the proxy still lets the server
                # generate the reply, and bills it).
                for stream in (False, True):
                    for i, fault in enumerate(FAULTS):
                        proxy.enqueue_faults([fault])
                        messages = SOLVER_PROMPT.render(task=TASKS[i % len(TASKS)], context="")
                        if fault.kind == "timeout":
                            with pytest.raises(ModelError, match="timed out"):
                                await impatient.complete(messages, role="solver",
                                                         max_output=CAP, stream=stream)
                            continue
                        done = await client.complete(messages, role="solver", max_output=CAP,
                                                     stream=stream, temperature=0.0)
                        assert done.usage.source == (
                            "estimate" if fault.kind == "missing_usage" else "provider")
                # Then whole runs, a quarter of their requests faulted at random.
                proxy.fault_rate = 0.25
                for i, solver in enumerate((LLMSolver(max_output=CAP),
                                            StreamingSolver(max_output=CAP))):
                    ctx = RunContext(client=client, budget=Budget(total=20_000),
                                     solver=solver, temperature=0.8, seed=i)
                    results.append(await arun(best_of_n(3, select="vote"), TASKS[i],
                                              context=ctx, run_id=f"proxy-{i}"))
            finally:
                await backend.aclose()
                await impatient_backend.aclose()

        asyncio.run(main())
    # (read once the proxy has stopped: a held request's reply may still have been on its
    # way from the server when the client gave up)
    records = [r for r in proxy.log if r.path.endswith("/chat/completions")]
    billed = proxy.billed_usage_totals()

    rows = ledger.entries()
    assert {_kind(r) for r in records} >= {f.kind for f in FAULTS} | {"ok"}
    assert any(r.stream for r in records) and any(not r.stream for r in records)
    assert all(r.error is None or r.error == "client disconnected" for r in records)
    assert len(results) == 2 and all(r.stop_reason for r in results)

    pairs = _pair(rows, records)
    for row, rec in pairs:
        _check_flag(row, rec)
    figures = _figures(pairs)
    print("\n" + _report(figures, pairs))  # the measured figures, under -s

    ledger_total = sum(r.total_tokens for r in rows)
    assert figures["all"] == (ledger_total, billed.total_tokens)
    # Never undercount.
    assert ledger_total >= billed.total_tokens, _report(figures, pairs)
    # The excess is the bounds' slack (and the estimates' tokenizer error), no more: each
    # bound row's completion is at most cap_sent - actual above what was billed.
    slack = sum((row.cap_sent or 0) - rec.billed.completion_tokens
                for row, rec in pairs if row.usage_source == "bound" and rec.billed)
    prompt_error = sum(row.prompt_tokens - rec.billed.prompt_tokens for row, rec in pairs
                       if row.usage_source in ("bound", "estimate") and rec.billed)
    estimate_error = sum(row.completion_tokens - rec.billed.completion_tokens
                         for row, rec in pairs if row.usage_source == "estimate" and rec.billed)
    assert ledger_total - billed.total_tokens == slack + prompt_error + estimate_error
    # What audit reports as upper bounds covers that slack (it is at most the caps charged).
    assert 0 <= slack <= ledger.totals().bound_completion_tokens
