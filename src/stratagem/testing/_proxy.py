"""A usage-counting loopback proxy with fault injection, in front of a real server.

:class:`UsageProxy` is a :class:`~stratagem.testing.FakeOpenAIServer` whose replies come from
an upstream OpenAI-compatible server (the embedded llama.cpp server, say) instead of a
responder. It forwards every ``POST /v1/chat/completions`` that an error fault does not refuse,
*non-streamed* (llama-cpp-python's server sends no usage when streaming), so the upstream's
own usage of every reply it generated lands in the record's ``billed`` field, whatever then
happens to the reply on its way back:

=================  ==========================================================  ==========
fault              what the client gets                                         billed
=================  ==========================================================  ==========
none               the upstream reply (re-streamed word by word if streaming)   yes
``rate_limit``     429, not forwarded                                           no
``server_error``   5xx, not forwarded                                           no
``timeout``        nothing: forwarded, then withheld until the client gives up  yes
``malformed_json`` a body (or SSE event) that does not parse                    yes
``missing_usage``  the reply with its usage stripped                            yes
``stream_cut``     part of the body or of the stream, then a closed connection  yes
=================  ==========================================================  ==========

:meth:`~stratagem.testing.FakeOpenAIServer.billed_usage_totals` is then what the upstream
billed: the figure a ledger in front of it must never undercount.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, get_args

from ._fake_server import FakeOpenAIServer, _Handler
from ._faults import Fault
from ._replies import FakeReply, FinishReason

__all__ = ["UsageProxy"]

_FINISH_REASONS: tuple[str, ...] = get_args(FinishReason)
_NO_ENV_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class UsageProxy(FakeOpenAIServer):
    """A loopback proxy that counts what an upstream server billed and injects faults.

    Use it like :class:`~stratagem.testing.FakeOpenAIServer` (a context manager with a
    ``base_url``, :meth:`enqueue_faults`, ``fault_rate`` and :attr:`log`)::

        with LocalModelServer() as upstream, UsageProxy(upstream.base_url) as proxy:
            proxy.enqueue_faults([Fault.malformed_json(), None])
            backend = OpenAIBackend(upstream.model, base_url=proxy.base_url, ...)
            ...
        billed = proxy.billed_usage_totals()

    The proxy caps nothing itself: the request's cap fields go upstream as they are, so an
    upstream that ignores one shows it. A streamed reply is re-streamed one word per chunk
    (whitespace between words becomes one space), with OpenAI's usage chunk when the request
    asked for ``include_usage``.

    Args:
        upstream: The upstream's base URL, ``http://127.0.0.1:PORT/v1``.
        fault_rate: Probability, from 0 to 1, that a request past the queue gets a fault.
        faults: The faults drawn from (uniformly) when ``fault_rate`` is positive.
        seed: Seed of the random draws.
        model: The model name listed by ``GET /v1/models``.
        upstream_timeout_s: How long one upstream request may take before it fails (the
            client then gets a 500, and nothing is billed).

    Raises:
        ValueError: As :class:`~stratagem.testing.FakeOpenAIServer`, or if ``upstream`` is
            not an ``http://`` URL.
    """

    _bills_timeouts = True

    def __init__(
        self,
        upstream: str,
        *,
        fault_rate: float = 0.0,
        faults: Sequence[Fault] = (),
        seed: int = 0,
        model: str = "upstream-model",
        upstream_timeout_s: float = 120.0,
    ) -> None:
        if not upstream.startswith("http://"):
            raise ValueError(f"upstream must be an http:// base URL, got {upstream!r}")
        # honours=(): the upstream applies the caps; the proxy never truncates a reply.
        super().__init__(self._forward, fault_rate=fault_rate, faults=faults, seed=seed,
                         honours=(), model=model)
        self.upstream = upstream.rstrip("/")
        """The upstream's base URL."""
        self.upstream_timeout_s = upstream_timeout_s
        """Timeout of one upstream request, in seconds."""

    def _forward(self, body: dict[str, Any]) -> FakeReply:
        """Ask the upstream, non-streamed, and return its reply with its own usage."""
        upstream_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        request = urllib.request.Request(
            f"{self.upstream}/chat/completions",
            data=json.dumps(upstream_body).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer proxy"},
            method="POST",
        )
        try:
            with _NO_ENV_PROXY.open(request, timeout=self.upstream_timeout_s) as response:
                data = json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"upstream answered HTTP {exc.code}") from exc
        choice = data["choices"][0]
        usage = data["usage"]  # a reply without usage cannot be counted: fail loudly
        finish = choice.get("finish_reason")
        return FakeReply(
            content=choice["message"].get("content") or "",
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            finish_reason=finish if finish in _FINISH_REASONS else None,
        )

    def _hold(self, handler: _Handler) -> Callable[[float], object]:
        """A ``timeout`` fault holds the reply until the client hangs up (it timed out),
        the hold ends or the proxy stops: the test waits only as long as the client does."""
        conn = handler.connection

        def hold(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                readable, _, _ = select.select([conn], [], [], min(left, 0.05))
                if not readable:
                    continue
                try:
                    if not conn.recv(1, socket.MSG_PEEK):
                        return  # end of file: the client closed the connection
                except OSError:
                    return
                self._stopping.wait(min(left, 0.05))  # bytes pending (not ours to read)

        return hold
