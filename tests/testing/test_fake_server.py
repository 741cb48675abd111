"""The fake OpenAI server, driven through the real ``openai`` SDK over 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import stratagem.testing
from stratagem.testing import FakeOpenAIServer, FakeReply, FakeUsage, Fault

T = TypeVar("T")
# Prompt tokens of USER: 2 words + 3 per message = 5.
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "two words"}]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def with_client(
    srv: FakeOpenAIServer,
    body: Callable[[openai.AsyncOpenAI], Awaitable[T]],
    *,
    max_retries: int = 0,
    timeout: float = 2.0,
) -> T:
    """Run ``body`` with an AsyncOpenAI client on ``srv``, closing the client afterwards."""

    async def main() -> T:
        async with openai.AsyncOpenAI(
            base_url=srv.base_url, api_key="test", max_retries=max_retries, timeout=timeout
        ) as client:
            return await body(client)

    return run(main())


async def chat(client: openai.AsyncOpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", USER)
    return await client.chat.completions.create(model="fake-model", **kwargs)


async def stream_all(client: openai.AsyncOpenAI, got: list[Any], **kwargs: Any) -> None:
    """Stream a reply, appending every chunk to ``got`` (kept even if the stream fails)."""
    stream = await chat(client, stream=True, **kwargs)
    async for chunk in stream:
        got.append(chunk)


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def http_post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


# -- normal replies -----------------------------------------------------------------------------


def test_non_streamed_reply_parses_with_the_sdk() -> None:
    with FakeOpenAIServer() as srv:
        resp = with_client(srv, chat)
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "fake-model"
    assert resp.choices[0].message.content == "echo: two words"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (5, 3)
    assert resp.usage.total_tokens == 8
    assert resp.usage.prompt_tokens_details is None  # unknown, as from a local server
    (record,) = srv.log
    assert resp._request_id == record.request_id
    assert (record.status, record.fault, record.stream, record.retry_count) == (200, None, False, 0)
    assert record.body is not None
    assert record.body["messages"] == USER
    assert record.usage == FakeUsage(5, 3)


def test_streamed_reply_with_include_usage_ends_with_a_usage_chunk() -> None:
    got: list[Any] = []
    with FakeOpenAIServer(lambda body: "alpha beta gamma") as srv:
        with_client(srv, lambda c: stream_all(c, got, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in got if ch.choices)
    assert text == "alpha beta gamma"
    assert [ch.choices[0].finish_reason for ch in got if ch.choices][-1] == "stop"
    assert got[-1].choices == []
    assert got[-1].usage.completion_tokens == 3
    assert all(ch.usage is None for ch in got[:-1])
    assert srv.log[0].stream
    assert srv.log[0].usage == FakeUsage(5, 3)


def test_streamed_reply_without_include_usage_sends_no_usage() -> None:
    got: list[Any] = []
    with FakeOpenAIServer() as srv:
        with_client(srv, lambda c: stream_all(c, got))
    assert all(ch.usage is None for ch in got)
    assert srv.log[0].usage is None
    assert srv.sent_usage_totals() == FakeUsage()


def test_reply_details_and_models_endpoint() -> None:
    reply = FakeReply("ok", prompt_tokens=100, cached_tokens=60, reasoning_tokens=7)

    async def body(client: openai.AsyncOpenAI) -> tuple[Any, list[str]]:
        models = [m.id async for m in client.models.list()]
        return await chat(client), models

    with FakeOpenAIServer(lambda _: reply, model="tiny") as srv:
        resp, models = with_client(srv, body)
    assert models == ["tiny"]
    usage = resp.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (100, 8)  # 1 word + 7 reasoning
    assert usage.prompt_tokens_details.cached_tokens == 60
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert srv.sent_usage_totals() == FakeUsage(100, 8, 60, 7)
    assert [r.path for r in srv.log] == ["/v1/models", "/v1/chat/completions"]


def test_x_request_id_on_every_response_including_errors() -> None:
    with FakeOpenAIServer() as srv:
        ok = http_get(f"{srv.base_url}/models")
        missing = http_get(f"{srv.base_url}/nope")
        bad = http_post(f"{srv.base_url}/chat/completions", {"model": "m"})
    assert [ok[0], missing[0], bad[0]] == [200, 404, 400]
    ids = [resp[1]["x-request-id"] for resp in (ok, missing, bad)]
    assert ids == [r.request_id for r in srv.log]
    assert len(set(ids)) == 3
    assert json.loads(bad[2])["error"]["type"] == "invalid_request_error"
    assert srv.log[2].error == "Missing required parameter: 'messages'."


def test_responder_exception_becomes_a_500_and_is_logged() -> None:
    def broken(body: dict[str, Any]) -> str:
        raise KeyError("oops")

    with FakeOpenAIServer(broken) as srv, pytest.raises(openai.InternalServerError):
        with_client(srv, chat)
    assert srv.log[0].status == 500
    assert srv.log[0].error is not None
    assert "KeyError" in srv.log[0].error


# -- output cap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_output_cap_truncates_and_sets_finish_reason_length(param: str) -> None:
    with FakeOpenAIServer(lambda _: "one two three four five") as srv:
        resp = with_client(srv, lambda c: chat(c, **{param: 2}))
    assert resp.choices[0].message.content == "one two"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 2


def test_backend_that_ignores_max_completion_tokens() -> None:
    with FakeOpenAIServer(lambda _: "one two three", honours=("max_tokens",)) as srv:
        resp = with_client(srv, lambda c: chat(c, max_completion_tokens=1))
    assert resp.choices[0].message.content == "one two three"
    assert resp.choices[0].finish_reason == "stop"


def test_reasoning_can_eat_the_whole_cap() -> None:
    with FakeOpenAIServer(lambda _: FakeReply("the answer", reasoning_tokens=10)) as srv:
        resp = with_client(srv, lambda c: chat(c, max_completion_tokens=4))
    assert resp.choices[0].message.content == ""
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 4
    assert resp.usage.completion_tokens_details.reasoning_tokens == 4


def test_output_cap_applies_to_streams() -> None:
    got: list[Any] = []
    opts = {"stream_options": {"include_usage": True}, "max_tokens": 1}
    with FakeOpenAIServer(lambda _: "one two three") as srv:
        with_client(srv, lambda c: stream_all(c, got, **opts))
    assert "".join(ch.choices[0].delta.content or "" for ch in got if ch.choices) == "one"
    assert got[-1].usage.completion_tokens == 1


# -- faults, one kind at a time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (Fault.rate_limit(), openai.RateLimitError, 429),
        (Fault.server_error(), openai.InternalServerError, 500),
        (Fault.server_error(503), openai.InternalServerError, 503),
        (Fault.context_length(4096), openai.BadRequestError, 400),
        (Fault.stream_cut(), openai.APIConnectionError, 200),
        (Fault.malformed_json(), json.JSONDecodeError, 200),
    ],
)
def test_fault_raises_in_the_sdk(fault: Fault, error: type[Exception], status: int) -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([fault])
        with pytest.raises(error) as info:
            with_client(srv, chat)
    (record,) = srv.log
    assert (record.fault, record.status, record.usage) == (fault, status, None)
    if isinstance(info.value, openai.APIStatusError):
        assert info.value.request_id == record.request_id


def test_context_length_error_has_openai_body_shape() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.context_length(4096)])
        with pytest.raises(openai.BadRequestError) as info:
            with_client(srv, chat)
    err = info.value
    assert (err.code, err.param, err.type) == (
        "context_length_exceeded",
        "messages",
        "invalid_request_error",
    )
    assert err.message.endswith(
        "This model's maximum context length is 4096 tokens. However, your messages resulted "
        "in 5 tokens. Please reduce the length of the messages."
    )


def test_retry_after_headers() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.rate_limit(0.25), Fault.server_error(503, retry_after_ms=40)])
        url, body = f"{srv.base_url}/chat/completions", {"messages": USER}
        limited, overloaded = http_post(url, body), http_post(url, body)
    assert limited[0] == 429
    assert limited[1]["retry-after"] == "0.25"
    assert json.loads(limited[2])["error"]["code"] == "rate_limit_exceeded"
    assert overloaded[0] == 503
    assert overloaded[1]["retry-after-ms"] == "40"
    assert "retry-after" not in overloaded[1]


def test_missing_usage_parses_with_usage_none() -> None:
    got: list[Any] = []
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.missing_usage(), Fault.missing_usage()])
        resp = with_client(srv, chat)
        with_client(srv, lambda c: stream_all(c, got, stream_options={"include_usage": True}))
    assert resp.choices[0].message.content == "echo: two words"
    assert resp.usage is None
    assert all(ch.usage is None for ch in got)
    assert [r.usage for r in srv.log] == [None, None]


def test_stream_cut_after_some_chunks() -> None:
    got: list[Any] = []
    with FakeOpenAIServer(lambda _: "a b c d e") as srv:
        srv.enqueue_faults([Fault.stream_cut(after_chunks=2)])
        with pytest.raises(openai.APIConnectionError):
            with_client(srv, lambda c: stream_all(c, got, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in got) == "a b"
    assert srv.log[0].usage is None


def test_stream_cut_after_usage_is_a_failure_that_still_delivered_usage() -> None:
    got: list[Any] = []
    with FakeOpenAIServer(lambda _: "a b c") as srv:
        srv.enqueue_faults([Fault.stream_cut(keep_usage=True)])
        with pytest.raises(openai.APIConnectionError):
            with_client(srv, lambda c: stream_all(c, got, stream_options={"include_usage": True}))
    assert got[-1].usage.completion_tokens == 3
    assert srv.log[0].usage == FakeUsage(5, 3)
    assert srv.sent_usage_totals().total_tokens == got[-1].usage.total_tokens


def test_malformed_stream_event() -> None:
    got: list[Any] = []
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.malformed_json()])
        with pytest.raises(json.JSONDecodeError):
            with_client(srv, lambda c: stream_all(c, got, stream_options={"include_usage": True}))
    assert len(got) == 1  # the role chunk arrived before the broken event
    assert srv.log[0].usage is None


def test_timeout_fault_and_stop_returns_promptly_while_it_is_pending() -> None:
    srv = FakeOpenAIServer().start()
    try:
        srv.enqueue_faults([Fault.timeout(20.0)])
        with pytest.raises(openai.APITimeoutError):
            with_client(srv, chat, timeout=0.2)
        assert srv.log[0].finished_at is None  # the server is still holding the request
    finally:
        began = time.monotonic()
        srv.stop()
    assert time.monotonic() - began < 2.0
    (record,) = srv.log
    assert (record.status, record.usage) == (None, None)
    assert record.finished_at is not None
    assert not [t for t in threading.enumerate() if t.name.startswith("FakeOpenAIServer")]


# -- retries and accounting ----------------------------------------------------------------------


def test_sdk_retry_after_429_makes_two_requests_and_one_usage() -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.rate_limit(retry_after=0.01), None])
        resp = with_client(srv, chat, max_retries=2)
    assert srv.requests == 2
    assert [r.status for r in srv.log] == [429, 200]
    assert [r.retry_count for r in srv.log] == [0, 1]
    assert srv.pending_faults == 0
    totals = srv.sent_usage_totals()
    assert (totals.prompt_tokens, totals.completion_tokens) == (
        resp.usage.prompt_tokens,
        resp.usage.completion_tokens,
    )
    assert resp._request_id == srv.log[1].request_id


def test_random_faults_are_reproducible_for_a_seed() -> None:
    kinds = [Fault.rate_limit(), Fault.server_error(), Fault.missing_usage()]

    def outcomes(seed: int) -> list[str | None]:
        with (
            FakeOpenAIServer(fault_rate=0.5, faults=kinds, seed=seed) as srv,
            openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0) as client,
        ):
            for _ in range(16):
                with contextlib.suppress(openai.APIStatusError):
                    client.chat.completions.create(model="m", messages=USER)
        return [r.fault.kind if r.fault else None for r in srv.log]

    first = outcomes(7)
    assert first == outcomes(7)
    assert first != outcomes(8)
    assert 0 < sum(k is not None for k in first) < 16


def test_queue_comes_before_random_faults() -> None:
    with FakeOpenAIServer(fault_rate=1.0, faults=[Fault.server_error()]) as srv:
        srv.enqueue_faults([None])
        first = http_post(f"{srv.base_url}/chat/completions", {"messages": USER})
        second = http_post(f"{srv.base_url}/chat/completions", {"messages": USER})
    assert (first[0], second[0]) == (200, 500)


def test_latency_applies_to_concurrent_requests_in_parallel() -> None:
    async def fan_out(client: openai.AsyncOpenAI) -> list[Any]:
        return await asyncio.gather(*(chat(client) for _ in range(8)))

    with FakeOpenAIServer(latency=0.3) as srv:
        replies = with_client(srv, fan_out)
    assert len(replies) == 8
    spans = [(r.started_at, r.finished_at or 0.0) for r in srv.log]
    assert all(end - start >= 0.3 for start, end in spans)
    # Served side by side, not one after another (a wall-clock bound would flake under load).
    in_flight = max(sum(s < end and e > start for s, e in spans) for start, end in spans)
    assert in_flight >= 4
    assert srv.sent_usage_totals() == FakeUsage(8 * 5, 8 * 3)


# -- lifecycle and public surface ------------------------------------------------------------------


def test_lifecycle() -> None:
    srv = FakeOpenAIServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.start()
    assert srv.running
    assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
    with pytest.raises(RuntimeError):
        srv.start()
    srv.stop()
    srv.stop()
    assert not srv.running


@pytest.mark.parametrize(
    "make",
    [
        lambda: FakeOpenAIServer(fault_rate=0.5),
        lambda: FakeOpenAIServer(fault_rate=1.5, faults=[Fault.rate_limit()]),
        lambda: FakeOpenAIServer(latency=-1),
        lambda: Fault.server_error(429),
        lambda: Fault.timeout(3600),
        lambda: Fault.rate_limit(-1),
    ],
)
def test_invalid_arguments_raise_value_error(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_pytest_fixture_yields_a_running_server(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    assert fake_openai_server.running
    assert with_client(fake_openai_server, chat).usage.total_tokens == 8


def test_all_matches_public_names() -> None:
    public = {
        name
        for name, value in vars(stratagem.testing).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert sorted(stratagem.testing.__all__) == sorted(public)
