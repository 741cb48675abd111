"""Edges of the fault matrix, one call each: what a failed or usage-less attempt is charged.

The rule the ledger follows (never undercount): an attempt is charged what the server reported
(usage source ``provider``); a whole reply without usage, a flagged estimate of its text
(``estimate``); a request the server took but whose reply was lost (malformed, cut short, timed
out), an upper bound: the prompt counted and the completion at the cap that was sent
(``bound``); and nothing for a request the server never received (refused: ``none``).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest

from stratagem.agents import (
    JUDGE_POINTWISE_PROMPT,
    ChatRequest,
    Message,
    ModelClient,
    OpenAIBackend,
    RetryPolicy,
)
from stratagem.budgets import Budget, LedgerEntry
from stratagem.errors import ModelError
from stratagem.graphs import RunContext, best_of_n, run
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault, FunctionModel

MSG = [{"role": "user", "content": "name three fruits please"}]
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


def _backend(base_url: str) -> OpenAIBackend:
    return OpenAIBackend("fake-model", base_url=base_url, api_key="sk-edges-00000000",
                         backend="vllm", timeout_s=1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_timed_out_plain_attempt_is_charged_its_upper_bound() -> None:
    """Non-streamed, a timeout may have been billed: charged at the bound (streamed: below)."""
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.timeout(seconds=3.0)])
        client = ModelClient(_backend(srv.base_url), retry=ONE_ATTEMPT)
        with pytest.raises(ModelError, match="timed out"):
            client.complete_sync(MSG, role="solver")
        (record,) = srv.log
    (row,) = client.ledger.entries()
    assert record.status is None and record.usage is None  # nothing was ever sent back
    assert row.status == "error" and row.request_id is None
    assert row.usage_source == "bound" and row.completion_tokens == row.cap_sent
    assert row.prompt_tokens > 0


def _unanswered_streamed_row(how: str) -> LedgerEntry:
    """The ledger row of a streamed attempt that got no response at all."""
    if how == "timeout":
        with FakeOpenAIServer() as srv:
            srv.enqueue_faults([Fault.timeout(seconds=3.0)])
            client = ModelClient(_backend(srv.base_url), retry=ONE_ATTEMPT)
            with pytest.raises(ModelError):
                client.complete_sync(MSG, role="solver", stream=True)
            assert srv.log[0].status is None  # the server never answered
    else:
        client = ModelClient(_backend(f"http://127.0.0.1:{_free_port()}/v1"), retry=ONE_ATTEMPT)
        with pytest.raises(ModelError):
            client.complete_sync(MSG, role="solver", stream=True)
    (row,) = client.ledger.entries()
    assert row.status == "error"
    return row


def test_a_refused_streamed_attempt_is_charged_nothing() -> None:
    row = _unanswered_streamed_row("refused")
    assert row.total_tokens == 0, f"charged {row.total_tokens} ({row.usage_source}) for " \
                                  f"a request the server never received: {row.error}"
    assert row.usage_source == "none"


def test_a_timed_out_streamed_attempt_is_charged_its_upper_bound() -> None:
    row = _unanswered_streamed_row("timeout")
    assert row.usage_source == "bound" and row.completion_tokens == row.cap_sent


# The exception named after "connection failed:" is the transport's (httpx2 or aiohttp).
@pytest.mark.parametrize(("how", "said"), [("timeout", "request timed out"),
                                           ("refused", "connection failed: ")])
def test_an_unanswered_streamed_attempt_is_not_called_a_cut_stream(how: str, said: str) -> None:
    """Said as the plain path says it: the stream never started, so nothing was cut."""
    row = _unanswered_streamed_row(how)
    assert "stream cut short" not in (row.error or ""), row.error
    assert said in (row.error or ""), row.error


def test_a_malformed_reply_keeps_the_request_id_the_server_sent() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.malformed_json()])
        client = ModelClient(_backend(srv.base_url), retry=ONE_ATTEMPT)
        with pytest.raises(ModelError, match="malformed"):
            client.complete_sync(MSG, role="solver")
        (record,) = srv.log
    (row,) = client.ledger.entries()
    assert row.usage_source == "bound" and record.billed is not None
    assert row.completion_tokens >= record.billed.completion_tokens
    assert record.request_id is not None and row.request_id == record.request_id


def test_a_stream_cut_after_its_usage_is_matched_and_charged_in_full() -> None:
    with FakeOpenAIServer(lambda body: FakeReply("apple pear plum")) as srv:
        srv.enqueue_faults([Fault.stream_cut(keep_usage=True)])
        client = ModelClient(_backend(srv.base_url), retry=ONE_ATTEMPT)
        with pytest.raises(ModelError, match="stream"):
            client.complete_sync(MSG, role="solver", stream=True)
        (record,) = srv.log
    (row,) = client.ledger.entries()
    assert record.usage is not None and row.request_id == record.request_id
    assert (row.prompt_tokens, row.completion_tokens, row.usage_source) == (
        record.usage.prompt_tokens, record.usage.completion_tokens, "provider")


LONG_WORDS = " ".join(["internationalization", "electroencephalograph"] * 150)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_reply_without_usage_never_pushes_spend_past_a_cap(stream: bool) -> None:
    with FakeOpenAIServer(lambda body: FakeReply(LONG_WORDS)) as srv:
        srv.enqueue_faults([Fault.missing_usage()])
        budget = Budget(total=200, roles={"solver": 200})
        client = ModelClient(_backend(srv.base_url), retry=ONE_ATTEMPT, budget=budget)
        done = client.complete_sync(MSG, role="solver", max_output=500, stream=stream)
        (record,) = srv.log
    assert record.body is not None
    cap = record.body["max_tokens"]
    assert cap < 200  # the reservation clamped the cap to what the budget had left
    assert done.entry.usage_source == "estimate" and done.finish_reason == "length"
    assert done.usage.completion_tokens <= cap, "estimated more tokens than the cap allows"
    assert budget.spent("solver") <= 200 and budget.overshoot_tokens == 0


def test_one_failed_judge_call_keeps_the_verdicts_of_its_siblings() -> None:
    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        if messages[0]["content"] == JUDGE_POINTWISE_PROMPT.system:
            if "seed 1" in str(messages[-1]["content"]):
                raise ModelError("judge endpoint refused the request", status_code=403)
            return "the steps hold\nSCORE: 0.8\nVERDICT: accept"
        return f"seed {request.seed}\nAnswer: {40 + (request.seed or 0)}"

    ctx = RunContext(client=ModelClient(FunctionModel(respond)))
    result = run(best_of_n(3, select="judge"), "What is 6*7?", context=ctx)
    assert [e.status for e in ctx.client.ledger.entries(role="judge")].count("ok") == 2
    assert any("judge endpoint refused" in note for note in result.notes)
    assert sorted(v["index"] for v in result.state["verdicts"]) == [0, 2]
    assert result.score == 0.8 and result.answer in ("40", "42")
