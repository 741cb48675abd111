"""The callback handler: one ledger row per model call of an unmodified LangGraph app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from stratagem.budgets import Account, Budget
from stratagem.integrations.langchain import (
    AsyncStratagemCallbackHandler,
    StratagemCallbackHandler,
)
from stratagem.testing import FakeOpenAIServer, Fault

from ._app import build


def _replies(n: int, **usage: Any) -> Iterator[AIMessage]:
    for i in range(n):
        yield AIMessage(content=f"answer {i}", usage_metadata=usage or None,  # type: ignore[arg-type]
                        response_metadata={"model_name": "fake-7b"})


def test_rows_per_node_role_branch_with_fake_model() -> None:
    acct = Account(budget=Budget(total=10_000), run_id="r1")
    usage = {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14,
             "input_token_details": {"cache_read": 6}}
    model = GenericFakeChatModel(messages=_replies(10, **usage))
    handler = StratagemCallbackHandler(acct, roles={"plan": "planner", "solve": "solver"})
    build(model).invoke({"question": "q"}, config={"callbacks": [handler]})
    rows = acct.entries()
    assert [(r.node, r.role) for r in rows] == [
        ("plan", "planner"), ("solve", "solver"), ("solve", "solver"), ("solve", "solver"),
        ("judge", "judge")]
    assert sorted(r.branch for r in rows if r.node == "solve") == ["0", "1", "2"]
    assert all(r.task_id for r in rows)
    assert all(r.model == "fake-7b" and r.usage_source == "provider" for r in rows)
    assert rows[0].cached_tokens == 6 and rows[0].reasoning_tokens is None  # unknown, not 0
    assert acct.spent() == 5 * 14
    assert acct.by_role()["solver"].calls == 3


def test_missing_usage_is_a_flagged_estimate() -> None:
    acct = Account(run_id="r2")
    model = GenericFakeChatModel(messages=_replies(10))
    build(model, fanout=1).invoke({"question": "q"},
                                  config={"callbacks": [StratagemCallbackHandler(acct)]})
    rows = acct.entries()
    assert len(rows) == 3
    assert {r.usage_source for r in rows} == {"estimate"}
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in rows)
    assert [r.role for r in rows] == ["plan", "solve", "judge"]  # node names, then the tag


def test_async_handler_and_ainvoke() -> None:
    acct = Account(run_id="r3")
    model = GenericFakeChatModel(messages=_replies(10, input_tokens=3, output_tokens=2,
                                                   total_tokens=5))
    app = build(model, fanout=4)
    asyncio.run(app.ainvoke({"question": "q"},
                            config={"callbacks": [AsyncStratagemCallbackHandler(acct)]}))
    assert len(acct.entries()) == 6
    assert acct.totals().total_tokens == 30


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda body: "three small words") as srv:
        yield srv


def _chat(srv: FakeOpenAIServer, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model="fake-model", base_url=srv.base_url, api_key="sk-test-abcdefgh1234",
                      max_retries=0, timeout=5, **kw)  # type: ignore[arg-type]


def test_chat_openai_rows_match_the_server_call_by_call(server: FakeOpenAIServer) -> None:
    acct = Account(run_id="r4")
    server.enqueue_faults([None, Fault.missing_usage(), None, Fault.server_error(500)])
    app = build(_chat(server), fanout=2)
    with pytest.raises(Exception, match="500"):
        app.invoke({"question": "q"}, config={"callbacks": [StratagemCallbackHandler(acct)]})
    rows = acct.entries()
    log = [r for r in server.log if r.path == "/v1/chat/completions"]
    assert len(rows) == len(log) == 4  # nothing missing, nothing twice
    ok = [r for r in rows if r.status == "ok"]
    by_source = sorted(r.usage_source for r in ok)
    assert by_source == ["estimate", "provider", "provider"]
    sent = server.sent_usage_totals()
    provider = [r for r in ok if r.usage_source == "provider"]
    assert sum(r.total_tokens for r in provider) == sent.total_tokens
    [failed] = [r for r in rows if r.status == "error"]
    assert failed.total_tokens == 0 and "500" in (failed.error or "")
    assert "sk-test" not in (failed.error or "")


def test_stream_usage_is_counted_once(server: FakeOpenAIServer) -> None:
    acct = Account(run_id="r5")
    model = _chat(server, stream_usage=True)
    handler = StratagemCallbackHandler(acct, roles={})
    chunks = list(model.stream("hello", config={"callbacks": [handler], "tags": ["role:w"]}))
    assert len(chunks) > 2
    [row] = acct.entries()
    assert row.role == "w" and row.usage_source == "provider"
    assert row.total_tokens == server.sent_usage_totals().total_tokens


def test_cut_stream_is_an_error_row(server: FakeOpenAIServer) -> None:
    acct = Account(run_id="r6")
    server.enqueue_faults([Fault.stream_cut(after_chunks=1)])
    model = _chat(server, stream_usage=True)
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error type
        list(model.stream("hello", config={"callbacks": [StratagemCallbackHandler(acct)]}))
    [row] = acct.entries()
    assert row.status == "error" and row.prompt_tokens > 0
    assert row.usage_source in ("estimate", "bound")
