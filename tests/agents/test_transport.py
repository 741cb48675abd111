"""OpenAIBackend's HTTP transports: aiohttp (the default) and the SDK's httpx2.

Both must send the same request, record the same rows and describe a failure the same way;
and a client its caller forgot to close must not leak connections or print warnings.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from typing import Any

import pytest

from stratagem.agents import ModelClient, OpenAIBackend, RetryPolicy
from stratagem.errors import ConfigError, ModelError
from stratagem.testing import FakeOpenAIServer, FakeReply, Fault

MSG = [{"role": "user", "content": "name a fruit"}]
ONCE = RetryPolicy(max_attempts=1)
TRANSPORTS = ["direct", "aiohttp", "httpx2"]


def _backend(url: str, transport: str, **kw: Any) -> OpenAIBackend:
    return OpenAIBackend("fake-model", base_url=url, api_key="sk-transport-0000000",
                         backend="vllm", timeout_s=0.5, transport=transport, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_both_transports_send_the_same_body_and_record_the_same_row(transport: str) -> None:
    with FakeOpenAIServer(lambda body: FakeReply("a ripe banana", cached_tokens=2)) as srv:
        backend = _backend(srv.base_url, transport, extra_body={"top_k": 5})
        client = ModelClient(backend)
        done = client.complete_sync(MSG, role="solver", max_output=32, temperature=0.5,
                                    seed=7, stop=["\n\n"], extra={"min_p": 0.1})
        (record,) = srv.log
    assert record.body == {"model": "fake-model", "messages": MSG, "max_tokens": 32,
                           "temperature": 0.5, "seed": 7, "stop": ["\n\n"], "top_k": 5,
                           "min_p": 0.1}
    assert record.usage is not None
    (row,) = client.ledger.entries()
    assert done.text == "a ripe banana" and row.request_id == record.request_id
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (
        record.usage.prompt_tokens, record.usage.completion_tokens, 2)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_refused_connection_is_called_a_connection_failure(transport: str,
                                                             stream: bool) -> None:
    client = ModelClient(_backend(f"http://127.0.0.1:{_free_port()}/v1", transport),
                         retry=ONCE)
    with pytest.raises(ModelError) as err:
        client.complete_sync(MSG, role="solver", stream=stream)
    message = str(err.value)
    if not stream:  # (the streamed message is pinned in tests/reliability/test_fault_edges.py)
        assert "connection failed" in message and "timed out" not in message, message
    (row,) = client.ledger.entries()
    assert row.status == "error" and row.total_tokens == 0 and row.request_id is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_read_timeout_is_called_a_timeout(transport: str) -> None:
    with FakeOpenAIServer() as srv:
        srv.enqueue_faults([Fault.timeout(seconds=2.0)])
        client = ModelClient(_backend(srv.base_url, transport), retry=ONCE)
        with pytest.raises(ModelError, match="request timed out"):
            client.complete_sync(MSG, role="solver")


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ConfigError, match="transport must be one of direct, aiohttp, httpx2"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", transport="requests")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_client_never_closed_is_closed_when_its_loop_ends(transport: str) -> None:
    """``arun`` leaves a shared client open; a caller who never closes it leaks nothing."""
    seen: list[Any] = []
    with FakeOpenAIServer(lambda body: FakeReply("a fig")) as srv:
        backend = _backend(srv.base_url, transport)

        async def forgetful() -> None:
            client = ModelClient(backend)
            await client.complete(MSG, role="solver")
            seen.append(await backend._clients.get())  # the SDK client of this loop

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop_errors: list[dict[str, Any]] = []
            with asyncio.Runner() as runner:
                runner.get_loop().set_exception_handler(lambda loop, c: loop_errors.append(c))
                runner.run(forgetful())
            gc.collect()
    (sdk,) = seen
    assert sdk.is_closed()
    assert not [w for w in caught if "nclosed" in str(w.message)], caught
    assert not loop_errors, loop_errors


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_backend_does_not_keep_ended_event_loops_alive(transport: str) -> None:
    import weakref

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    with FakeOpenAIServer(lambda body: FakeReply("a fig")) as srv:
        backend = _backend(srv.base_url, transport)
        client = ModelClient(backend)

        async def calls() -> None:  # never closed by the caller
            loops.append(weakref.ref(asyncio.get_running_loop()))
            await asyncio.gather(*(client.complete(MSG, role="solver") for _ in range(4)))

        for _ in range(3):
            asyncio.run(calls())
        gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
    assert not backend._clients


def _raw_server(reply: bytes) -> tuple[socket.socket, int]:
    """A server that answers every request on its socket with ``reply`` and closes."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return listener, int(listener.getsockname()[1])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reply_that_is_not_valid_http_is_a_retried_malformed_response(transport: str) -> None:
    bad = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nBad Header Token: x\r\n"
           b"Content-Length: 2\r\n\r\n{}")
    listener, port = _raw_server(bad)
    try:
        client = ModelClient(_backend(f"http://127.0.0.1:{port}/v1", transport),
                             retry=RetryPolicy(max_attempts=2, initial_delay_s=0.001))
        with pytest.raises(ModelError, match="gave up after 2 attempt"):
            client.complete_sync(MSG, role="solver")
    finally:
        listener.close()
    rows = client.ledger.entries()
    assert [r.status for r in rows] == ["error", "error"]
    # a 200 the client could not read: the server may have billed it, so an upper bound
    assert all(r.usage_source == "bound" and r.completion_tokens == r.cap_sent for r in rows)


def test_stream_options_of_the_caller_are_kept_and_usage_is_always_asked_for() -> None:
    with FakeOpenAIServer(lambda body: FakeReply("a fig")) as srv:
        client = ModelClient(_backend(srv.base_url, "aiohttp"))
        client.complete_sync(MSG, role="solver", stream=True, extra={
            "stream_options": {"continuous_usage_stats": True, "include_usage": False}})
        (record,) = srv.log
    assert record.body is not None
    assert record.body["stream_options"] == {"continuous_usage_stats": True,
                                             "include_usage": True}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_http_proxy_from_the_environment_carries_the_request(
        transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The "proxy" is the fake server itself: a forward proxy receives the absolute URL.
    unreachable = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    with FakeOpenAIServer(lambda body: FakeReply("a fig")) as srv:
        proxy = srv.base_url.removesuffix("/v1")
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        client = ModelClient(_backend(unreachable, transport), retry=ONCE)
        done = client.complete_sync(MSG, role="solver")
        (record,) = srv.log
    assert done.text == "a fig" and record.path == "/v1/chat/completions"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_proxy_sends_the_request_directly(transport: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(lambda body: FakeReply("a fig")) as srv:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{_free_port()}")  # a dead proxy
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "127.0.0.1")
        client = ModelClient(_backend(srv.base_url, transport), retry=ONCE)
        assert client.complete_sync(MSG, role="solver").text == "a fig"
        assert len(srv.log) == 1


def test_a_redirect_is_a_clear_error_not_followed() -> None:
    reply = (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/v2/chat/completions"
             b"\r\nContent-Length: 0\r\n\r\n")
    listener, port = _raw_server(reply)
    try:
        client = ModelClient(_backend(f"http://127.0.0.1:{port}/v1", "direct"),
                             retry=RetryPolicy(max_attempts=3, initial_delay_s=0.001))
        with pytest.raises(ModelError, match=r"HTTP 307: redirected to http://127\.0\.0\.1:1/v2"):
            client.complete_sync(MSG, role="solver")
    finally:
        listener.close()
    (row,) = client.ledger.entries()  # not retried: the base URL is wrong
    assert row.status == "error" and row.total_tokens == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_streamed_chunk_longer_than_64_kib_arrives_whole(transport: str) -> None:
    word = "x" * 70_000  # one chunk, one SSE line of more than 64 KiB
    with FakeOpenAIServer(lambda body: FakeReply(f"{word} done")) as srv:
        client = ModelClient(_backend(srv.base_url, transport), retry=ONCE)
        done = client.complete_sync(MSG, role="solver", stream=True, max_output=4)
    assert done.text.startswith(word)
