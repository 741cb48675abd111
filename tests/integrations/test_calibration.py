"""The LangChain adapters learn what a server bills beyond tiktoken, as ModelClient does, so
their estimates of replies without usage do not undercount (issue 19)."""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI

from stratagem.budgets import CALIBRATION, Account, Budget, count_chat_tokens
from stratagem.integrations.langchain import StratagemCallbackHandler, budgeted
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault

PROMPT = "Name three fruits that are red, and say why each one is red."
MSG = [{"role": "user", "content": PROMPT}]
TEMPLATE = 3.0  # the server bills three times what tiktoken counts (a long chat template)


def _server() -> FakeOpenAIServer:
    counted = count_chat_tokens(MSG, "fake-model")
    words = "cherries strawberries and tomatoes are red because of their pigments"
    return FakeOpenAIServer(lambda body: FakeReply(words, prompt_tokens=int(counted * TEMPLATE),
                                                   completion_tokens=40))


def _chat(srv: FakeOpenAIServer, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model="fake-model", base_url=srv.base_url, api_key="sk-cal-test-123456",
                      max_retries=0, timeout=2, **kw)  # type: ignore[arg-type]


def _billed_prompt() -> int:
    return int(count_chat_tokens(MSG, "fake-model") * TEMPLATE)


def test_budgeted_scales_its_estimates_by_what_the_server_billed() -> None:
    with _server() as srv:
        acct = Account(budget=Budget(total=10_000), run_id="cal-b")
        llm = budgeted(_chat(srv), acct, role="solver", backend="vllm")
        llm.invoke(PROMPT)  # with usage: learned from
        srv.enqueue_faults([Fault.missing_usage()])
        llm.invoke(PROMPT)  # without: estimated, scaled
        key = (srv.base_url.rstrip("/"), "fake-model")
    first, second = acct.entries()
    assert first.usage_source == "provider" and first.prompt_tokens == _billed_prompt()
    assert second.usage_source == "estimate"
    assert second.prompt_tokens >= _billed_prompt()  # not tiktoken's third of it
    scale = CALIBRATION.scale(key)
    assert scale is not None and scale.prompt >= TEMPLATE * 0.99


def test_the_handler_scales_its_estimates_by_what_the_server_billed() -> None:
    with _server() as srv:
        acct = Account(run_id="cal-h")
        handler = StratagemCallbackHandler(acct)
        llm = _chat(srv)
        llm.invoke(PROMPT, config={"callbacks": [handler]})
        srv.enqueue_faults([Fault.missing_usage()])
        llm.invoke(PROMPT, config={"callbacks": [handler]})
    first, second = acct.entries()
    assert first.usage_source == "provider"
    assert second.usage_source == "estimate" and second.prompt_tokens >= _billed_prompt()
