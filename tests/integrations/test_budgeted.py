"""Budgeted chat models: reserve, clamp, commit and record every attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from stratagem.agents import RetryPolicy
from stratagem.budgets import Account, Budget
from stratagem.errors import BudgetExceeded
from stratagem.integrations.langchain import (
    StratagemCallbackHandler,
    budgeted,
    end_on_budget,
)
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault

from ._app import build

FAST = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.02)
LONG = " ".join(f"w{i}" for i in range(400))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    # honours only max_tokens, like llama.cpp's and Ollama's servers
    with FakeOpenAIServer(lambda body: LONG, honours=("max_tokens",)) as srv:
        yield srv


def _chat(srv: FakeOpenAIServer, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model="fake-model", base_url=srv.base_url, api_key="sk-test-abcdefgh1234",
                      timeout=0.5, **kw)  # type: ignore[arg-type]


def _chat_log(srv: FakeOpenAIServer) -> list[Any]:
    return [r for r in srv.log if r.path == "/v1/chat/completions"]


def test_sdk_retries_become_recorded_attempts(server: FakeOpenAIServer) -> None:
    acct = Account(run_id="r1")
    server.enqueue_faults([Fault.rate_limit(0.01), Fault.server_error(503),
                           Fault.timeout(2.0), None])
    llm = budgeted(_chat(server, max_retries=5), acct, role="solver", backend="llamacpp",
                   retry=FAST, max_output=20)
    reply = llm.invoke("hi")
    assert reply.content
    log = _chat_log(server)
    assert len(log) == 4  # the SDK did not retry on its own (it would have sent more)
    assert {r.retry_count for r in log} == {0}
    rows = acct.entries()
    assert [(r.attempt, r.status) for r in rows] == [(1, "error"), (2, "error"),
                                                     (3, "error"), (4, "ok")]
    assert [r.request_id for r in rows[:2]] == [log[0].request_id, log[1].request_id]
    assert rows[3].request_id == log[3].request_id
    assert rows[2].usage_source == "bound"  # timed out: maybe billed, charged at its cap
    assert rows[3].usage_source == "provider"
    assert rows[3].completion_tokens == log[3].usage.completion_tokens == 20


def test_the_honoured_cap_field_is_sent(server: FakeOpenAIServer) -> None:
    acct = Account(budget=Budget(total=10_000, roles={"solver": 60}), run_id="r2")
    llm = budgeted(_chat(server), acct, role="solver", backend="llamacpp", max_output=500)
    llm.invoke("two words")
    [req] = _chat_log(server)
    assert req.body is not None
    assert req.body["max_tokens"] == req.body["max_completion_tokens"] < 60
    [row] = acct.entries()
    assert row.completion_tokens <= (row.cap_sent or 0)
    assert acct.spent("solver") <= 60


def test_sixteen_way_fanout_holds_the_cap(server: FakeOpenAIServer) -> None:
    limit = 16 * 40
    acct = Account(budget=Budget(total=100_000, roles={"solve": limit,
                                                      "plan": 10_000, "judge": 10_000}),
                   run_id="r3")
    llm = budgeted(_chat(server), acct, backend="llamacpp", max_output=100)
    app = build(llm, fanout=16, wrap=end_on_budget)
    asyncio.run(app.ainvoke({"question": "q"}))
    solver = [r for r in acct.entries() if r.role == "solve"]  # roles default to node names
    assert solver
    # zero output overshoot: no reply went past the cap it was sent, and the role's total
    # stays within its limit (the only slack is the prompt estimate, which overestimates)
    assert all(r.completion_tokens <= (r.cap_sent or 0) for r in solver)
    assert sum(r.total_tokens for r in solver) <= limit
    assert acct.spent("solve") <= limit
    assert any(r.cap_sent and r.cap_sent < 100 for r in solver)  # the cap was clamped
    # the ledger and the server agree call by call
    assert len(_chat_log(server)) == len(acct.entries())
    assert sum(r.total_tokens for r in acct.entries()) == server.sent_usage_totals().total_tokens


def test_budget_exceeded_ends_the_run_gracefully() -> None:
    # (END stops only the node's own routing: the static edge solve -> judge still runs,
    # so the judge, wrapped too, is refused in turn and writes the last update)
    acct = Account(budget=Budget(total=10_000, roles={"solve": 5, "judge": 5}), run_id="r4")
    llm = budgeted(FakeListChatModel(responses=["ok"] * 10), acct)
    out = build(llm, fanout=1, wrap=lambda f: end_on_budget(
        f, update=lambda state, exc: {"verdict": f"stopped: {exc.role}"})).invoke(
        {"question": "q"})
    assert out["verdict"] == "stopped: judge"
    assert not out.get("answers")
    assert [r.role for r in acct.entries()] == ["plan"]  # nothing refused was sent
    with pytest.raises(BudgetExceeded):
        llm.invoke("x", config={"tags": ["role:solve"]})


def test_stream_batch_and_handler_do_not_double_count(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: "a short reply"
    acct = Account(run_id="r5")
    llm = budgeted(_chat(server), acct, role="w", backend="llamacpp")
    handler = StratagemCallbackHandler(acct)
    chunks = list(llm.stream("hi", config={"callbacks": [handler]}))
    assert "".join(str(c.content) for c in chunks) == "a short reply"
    llm.batch(["a", "b"], config={"callbacks": [handler]})
    asyncio.run(llm.ainvoke("c"))
    rows = acct.entries()
    assert len(rows) == len(_chat_log(server)) == 4
    assert all(r.usage_source == "provider" for r in rows)
    assert sum(r.total_tokens for r in rows) == server.sent_usage_totals().total_tokens


def test_bind_tools_and_structured_output_keep_the_budget(server: FakeOpenAIServer) -> None:
    class Answer(BaseModel):
        value: int

    server.responder = lambda body: FakeReply(content='{"value": 4}')
    acct = Account(budget=Budget(total=5_000), run_id="r6")
    llm = budgeted(_chat(server), acct, role="solver", backend="llamacpp")
    structured = llm.with_structured_output(Answer, method="json_mode")
    assert structured.invoke("2+2 as json") == Answer(value=4)
    with_tools = llm.bind_tools([Answer])
    with_tools.invoke("call a tool")
    rows = acct.entries()
    assert len(rows) == 2 == len(_chat_log(server))
    assert "tools" in (_chat_log(server)[1].body or {})
