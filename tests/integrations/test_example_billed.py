"""Integration: the instrumented example app against what the embedded llama.cpp server billed.

``examples/instrument_langgraph.py``'s graph (plan -> a ``Send`` fan-out of three solvers ->
judge), imported from the example unchanged, runs on ``ChatOpenAI`` pointed at a
:class:`~stratagem.testing.UsageProxy` in front of the embedded llama.cpp server. The proxy
injects 429, 500, a timeout, a reply without usage and a cut stream, and records for every
request what the server billed. Two set-ups, as the example offers them:

* observe: ``ChatOpenAI(max_retries=0)`` + :class:`StratagemCallbackHandler`. A failed call
  fails its node and the run (the app has no retries), so each failing fault gets its own run;
* enforce: ``budgeted(ChatOpenAI(...))`` with the handler attached too (``--enforce``): the
  budgeted model retries, so the runs with faults still finish, and every attempt is a row.

Then the ledger is compared with the proxy's log per node (and ``Send`` branch), call by call:
each request is one row (nothing missing, nothing counted twice: the handler skips what the
budgeted model records), a delivered usage is the row exactly, a reply without usage is a
flagged ``estimate``, a lost reply (timeout, cut stream) a flagged upper ``bound`` at or above
the completion billed, a refused request (429/500) a zero ``none`` row; and per node the
ledger differs from the bill only on flagged rows.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from stratagem.agents import LocalModelServer, RetryPolicy
from stratagem.budgets import Account, Budget, LedgerEntry
from stratagem.integrations.langchain import StratagemCallbackHandler, budgeted
from stratagem.testing import FakeOpenAIServer, Fault, RequestRecord, UsageProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "instrument_langgraph.py"
ROLES = {"plan": "planner", "solve": "solver", "judge": "judge"}
QUESTION = {"question": "What is 12 * 7?"}
CAP = 16
"""Output cap of every call: small, so the runs are quick on two loaded cores."""
PATIENT_TIMEOUT_S = 300.0
"""Client timeout of normal calls (a loaded machine can be slow)."""
IMPATIENT_TIMEOUT_S = 2.0
"""Client timeout of the one run whose first call gets a ``timeout`` fault (its only call)."""
RETRY = RetryPolicy(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.02)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("instrument_langgraph", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalModelServer]:
    if importlib.util.find_spec("llama_cpp") is None:  # importing it opens /dev/null
        pytest.skip("needs the `local` extra")
    with LocalModelServer(n_ctx=2048) as srv:
        # The first reply of a fresh server is slow (weights paged in): not through the proxy.
        body = {"model": srv.model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hello"}]}
        request = urllib.request.Request(f"{srv.base_url}/chat/completions",
                                         data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
        with _NO_PROXY.open(request, timeout=120) as response:
            json.load(response)
        yield srv


def _chat(proxy: UsageProxy, *, stream: bool = False,
          timeout: float = PATIENT_TIMEOUT_S) -> ChatOpenAI:
    """The app's model, configured as its author would for llama.cpp: the SDK's retries off,
    and the cap in ``max_tokens`` too (ChatOpenAI sends ``max_completion_tokens``, which
    llama.cpp ignores)."""
    return ChatOpenAI(model=proxy.model, base_url=proxy.base_url, api_key="none",  # type: ignore[arg-type]
                      max_retries=0, timeout=timeout, temperature=0.0,
                      max_tokens=CAP,  # type: ignore[call-arg]
                      extra_body={"max_tokens": CAP},
                      streaming=stream, stream_usage=stream or None)


def _run(app: Any, handler: StratagemCallbackHandler, *, fails: bool) -> None:
    if fails:
        with pytest.raises(Exception):  # noqa: B017 - the fault's own error, whatever it is
            app.invoke(QUESTION, config={"callbacks": [handler]})
    else:
        out = app.invoke(QUESTION, config={"callbacks": [handler]})
        assert len(out["answers"]) == 3 and "verdict" in out


# -- matching rows with requests ---------------------------------------------------------------

Key = tuple[str, str | None]


def _key_of_request(rec: RequestRecord) -> Key:
    """The node (and ``Send`` branch) that sent a request, read from its prompt."""
    assert rec.body is not None
    text = str(rec.body["messages"][-1]["content"])
    if text.startswith("Split into three parts"):
        return ("plan", None)
    if text.startswith("Solve part "):
        return ("solve", str(int(text.removeprefix("Solve part ")) - 1))
    assert text.startswith("Best of"), text
    return ("judge", None)


def _pair(rows: Sequence[LedgerEntry], records: Sequence[RequestRecord]
          ) -> list[tuple[LedgerEntry, RequestRecord]]:
    """Each row with its request: same node and branch, then in order (the attempts of one
    call are made one after the other)."""
    by_key: dict[Key, list[RequestRecord]] = defaultdict(list)
    for rec in records:
        by_key[_key_of_request(rec)].append(rec)
    rows_by_key: dict[Key, list[LedgerEntry]] = defaultdict(list)
    for row in rows:
        assert row.node is not None
        rows_by_key[(row.node, row.branch)].append(row)
    assert set(rows_by_key) == set(by_key), (sorted(rows_by_key, key=str),
                                             sorted(by_key, key=str))
    pairs: list[tuple[LedgerEntry, RequestRecord]] = []
    for key, recs in by_key.items():
        mine = sorted(rows_by_key[key], key=lambda r: r.started_at)
        assert len(mine) == len(recs), f"{key}: {len(mine)} rows for {len(recs)} requests"
        pairs += zip(mine, sorted(recs, key=lambda r: r.index), strict=True)
    return pairs


def _kind(rec: RequestRecord) -> str:
    return rec.fault.kind if rec.fault is not None else "ok"


def _check(row: LedgerEntry, rec: RequestRecord, roles: dict[str, str]) -> None:
    kind = _kind(rec)
    assert row.role == roles.get(row.node or "", row.node), row
    if rec.usage is not None:  # usage delivered: the row is exactly that
        assert (row.usage_source, row.status) == ("provider", "ok"), (row, rec)
        assert (row.prompt_tokens, row.completion_tokens) == (
            rec.usage.prompt_tokens, rec.usage.completion_tokens), (row, rec)
        assert rec.billed == rec.usage
        return
    if kind == "missing_usage":  # a whole reply without usage: an estimate, flagged
        assert (row.usage_source, row.status) == ("estimate", "ok"), (row, rec)
        assert row.prompt_tokens > 0 and rec.billed is not None
        return
    if kind in ("timeout", "stream_cut"):  # generated (billed), then lost: an upper bound
        assert (row.usage_source, row.status) == ("bound", "error"), (row, rec)
        assert rec.billed is not None
        assert row.completion_tokens >= CAP >= rec.billed.completion_tokens, (row, rec)
        return
    assert kind in ("rate_limit", "server_error"), (row, rec)  # refused: nothing generated
    assert (row.usage_source, row.status, row.total_tokens) == ("none", "error", 0), (row, rec)
    assert rec.billed is None


def _reconcile(account: Account, proxy: UsageProxy, roles: dict[str, str]
               ) -> list[tuple[LedgerEntry, RequestRecord]]:
    records = [r for r in proxy.log if r.path.endswith("/chat/completions")]
    assert all(r.error in (None, "client disconnected") for r in records), records
    pairs = _pair(account.entries(), records)
    for row, rec in pairs:
        _check(row, rec, roles)
    # Per node: the ledger differs from what the server billed only on flagged rows. (A lost
    # or usage-less reply's prompt is a tiktoken count, which can be below llama.cpp's count
    # with its chat template: such a node can be under its bill by that much, flagged.)
    per_node: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row, rec in pairs:
        billed = rec.billed.total_tokens if rec.billed else 0
        sums = per_node[row.node or ""]
        sums[0] += 1
        sums[1] += row.total_tokens
        sums[2] += billed
        if row.usage_source != "provider":
            sums[3] += row.total_tokens - billed
    for node, (_, ledger, billed, flagged) in per_node.items():
        assert ledger - billed == flagged, (node, ledger, billed, flagged)
    print("\n" + "\n".join(f"{node:<6} rows {n:>3} ledger {ledger:>6} billed {billed:>6} "
                           f"(flagged rows' difference {flagged:+d})"
                           for node, (n, ledger, billed, flagged) in sorted(per_node.items())))
    return pairs


# -- the runs ---------------------------------------------------------------------------------


def test_observe_one_row_per_request_with_the_sdk_retries_off(
        upstream: LocalModelServer) -> None:
    example = _example()
    account = Account(budget=Budget(total=1_000_000), run_id="observe")
    handler = StratagemCallbackHandler(account, roles=ROLES)
    with UsageProxy(upstream.base_url, model=upstream.model) as proxy:
        app = example.build_app(_chat(proxy))
        streaming = example.build_app(_chat(proxy, stream=True))
        impatient = example.build_app(_chat(proxy, timeout=IMPATIENT_TIMEOUT_S))
        _run(app, handler, fails=False)
        # A solver's reply without usage: the run goes on, that row is an estimate.
        proxy.enqueue_faults([None, None, Fault.missing_usage()])
        _run(app, handler, fails=False)
        proxy.enqueue_faults([None, None, None, None, Fault.missing_usage()])
        _run(streaming, handler, fails=False)
        # The judge refused, or its stream cut: the run fails after four good calls.
        for fault, graph in ((Fault.rate_limit(retry_after=0.01), app),
                             (Fault.server_error(500), app),
                             (Fault.stream_cut(after_chunks=2), streaming)):
            proxy.enqueue_faults([None, None, None, None, fault])
            _run(graph, handler, fails=True)
        # The planner's reply held until the client gives up: the run ends there.
        proxy.enqueue_faults([Fault.timeout(seconds=25.0)])
        _run(impatient, handler, fails=True)
    pairs = _reconcile(account, proxy, ROLES)
    kinds = {_kind(rec) for _, rec in pairs}
    assert kinds == {"ok", "missing_usage", "rate_limit", "server_error", "stream_cut",
                     "timeout"}
    assert len(pairs) == 6 * 5 + 1
    assert all(row.attempt in (None, 1) for row, _ in pairs)


def test_enforce_every_attempt_is_a_row_and_the_handler_adds_none(
        upstream: LocalModelServer) -> None:
    example = _example()
    account = Account(budget=Budget(total=1_000_000, roles={"solver": 500_000}),
                      run_id="enforce")
    handler = StratagemCallbackHandler(account, roles=ROLES)  # attached too, as --enforce does
    with UsageProxy(upstream.base_url, model=upstream.model) as proxy:

        def app(timeout: float = PATIENT_TIMEOUT_S, retry: RetryPolicy = RETRY) -> Any:
            return example.build_app(budgeted(_chat(proxy, timeout=timeout), account,
                                              backend="llamacpp", retry=retry))

        plain = app()
        # Faults on first attempts, each retried by the budgeted model: the runs finish.
        # (The cut reply is not streamed here; streaming through budgeted() is tested below.)
        proxy.enqueue_faults([Fault.rate_limit(retry_after=0.01), Fault.server_error(500),
                              None, None, Fault.missing_usage()])
        _run(plain, handler, fails=False)
        proxy.enqueue_faults([None, None, None, None, Fault.stream_cut()])
        _run(plain, handler, fails=False)
        # A timeout, one attempt only (a retry under the short timeout could time out too).
        proxy.enqueue_faults([Fault.timeout(seconds=25.0)])
        _run(app(timeout=IMPATIENT_TIMEOUT_S, retry=RetryPolicy(max_attempts=1)), handler,
             fails=True)
    # The budgeted model charges the node's name (it has no ``roles`` map; ``role=`` or a
    # ``role:<name>`` tag would name it), as the example's --enforce does.
    pairs = _reconcile(account, proxy, {})
    kinds = {_kind(rec) for _, rec in pairs}
    assert kinds == {"ok", "missing_usage", "rate_limit", "server_error", "stream_cut",
                     "timeout"}
    assert len(pairs) == (5 + 2) + (5 + 1) + 1
    # Every attempt is a row, numbered: the first run's plan took three.
    plans = sorted((row for row, _ in pairs if row.node == "plan"), key=lambda r: r.started_at)
    assert [r.attempt for r in plans[:3]] == [1, 2, 3]
    assert all(row.cap_sent == CAP for row, _ in pairs)


def test_budgeted_streaming_chat_openai_answers() -> None:
    with FakeOpenAIServer(lambda body: "a short answer") as srv:
        chat = ChatOpenAI(model="m", base_url=srv.base_url, api_key="none",  # type: ignore[arg-type]
                          max_retries=0, streaming=True, stream_usage=True)
        llm = budgeted(chat, Account(budget=Budget(total=10_000)), backend="llamacpp")
        assert llm.invoke("hi").content == "a short answer"
        (record,) = [r for r in srv.log if r.path.endswith("/chat/completions")]
    (row,) = llm.account.entries()
    assert record.stream and row.usage_source == "provider" and record.usage is not None
    assert row.completion_tokens == record.usage.completion_tokens
