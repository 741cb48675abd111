"""A loopback OpenAI-compatible HTTP server with scripted faults and exact token accounting.

The server answers ``POST /v1/chat/completions`` (JSON or SSE) and ``GET /v1/models`` on
``127.0.0.1`` only. Every HTTP request it receives, retries included, becomes one
:class:`RequestRecord` in :attr:`FakeOpenAIServer.log`, with the usage it actually sent; that
log is the ground truth a token ledger is reconciled against.

Every response carries ``Connection: close``: one request per connection keeps every handler
thread short-lived, so :meth:`FakeOpenAIServer.stop` can always join them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from ._faults import Fault
from ._replies import FakeUsage, Responder, echo_responder
from ._wire import Exchange, serve_chat

__all__ = ["FakeOpenAIServer", "RequestRecord"]

CapParam = str
"""Name of a request parameter that caps the output: ``max_tokens`` or ``max_completion_tokens``."""


@dataclass(frozen=True)
class RequestRecord:
    """What the fake server received and sent for one HTTP request.

    Attributes:
        index: Arrival order, from 0.
        method: ``GET`` or ``POST``.
        path: The URL path, e.g. ``/v1/chat/completions``.
        body: The decoded JSON body, or ``None`` (GET, or a body that did not decode).
        fault: The fault applied, or ``None`` for a normal reply.
        status: The HTTP status sent, or ``None`` while pending or when no reply was sent
            (``timeout`` fault).
        usage: The usage the client was sent, or ``None`` when none went out (errors, missing
            usage, a cut stream, a stream without ``include_usage``).
        request_id: The ``x-request-id`` header sent (the SDK's ``response._request_id``).
        stream: Whether the request asked for ``"stream": true``.
        retry_count: The ``x-stainless-retry-count`` header (0 on the first attempt), or
            ``None`` if the client did not send it.
        started_at: ``time.monotonic()`` when the request arrived.
        finished_at: ``time.monotonic()`` when the outcome was final, or ``None`` while pending.
        error: Why the server itself failed the request (a responder exception, a bad request,
            a client that went away), else ``None``.
        billed: The usage of the reply the server generated, whether or not it reached the
            client (a real server bills it either way): set for every generated reply,
            including malformed, cut and usage-less ones; ``None`` when nothing was generated
            (error statuses, ``timeout`` faults).
    """

    index: int
    method: str
    path: str
    body: dict[str, Any] | None
    fault: Fault | None
    status: int | None
    usage: FakeUsage | None
    request_id: str
    stream: bool
    retry_count: int | None
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    billed: FakeUsage | None = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # server_close() joins every handler thread
    # socketserver's default backlog of 5 makes a 64-way burst wait for TCP's 1 s retry.
    request_queue_size = 1024

    def __init__(self, owner: FakeOpenAIServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that hung up is part of the job, not a server bug
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked SSE, so a cut stream is detectable
    timeout = 60.0  # socket timeout: a silent client cannot pin a handler thread forever
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        self.server.owner._dispatch(self)

    def do_POST(self) -> None:
        self.server.owner._dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; the request log is `FakeOpenAIServer.log`


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on ``127.0.0.1`` with fault injection.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with FakeOpenAIServer(lambda body: "hello there") as srv:
            client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="test")
            ...
        assert srv.sent_usage_totals().completion_tokens == 2

    Faults come first from the queue filled by :meth:`enqueue_faults` (``None`` entries mean
    "answer normally"), then, once it is empty, at random with probability ``fault_rate``.
    Only ``POST /v1/chat/completions`` requests consume faults.

    Args:
        responder: Builds the reply from the request body; a plain string reply is shorthand
            for ``FakeReply(content=...)``. Defaults to :func:`echo_responder`.
        fault_rate: Probability, from 0 to 1, that a request gets a random fault.
        faults: The faults drawn from (uniformly) when ``fault_rate`` is positive.
        seed: Seed of the random draws, so a sequential run is reproducible.
        honours: The output-cap parameters the server obeys. Pass ``("max_tokens",)`` to mimic
            a backend that silently ignores ``max_completion_tokens`` (Ollama).
        latency: Seconds added before every response, for fan-out benchmarks.
        model: Model name sent when the request names none, and listed by ``/v1/models``.

    Raises:
        ValueError: If ``fault_rate`` is outside [0, 1], or positive with no ``faults``, or if
            ``latency`` is negative.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        fault_rate: float = 0.0,
        faults: Sequence[Fault] = (),
        seed: int = 0,
        honours: Sequence[CapParam] = ("max_tokens", "max_completion_tokens"),
        latency: float = 0.0,
        model: str = "fake-model",
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {fault_rate}")
        if fault_rate > 0 and not faults:
            raise ValueError("fault_rate > 0 needs at least one fault in `faults`")
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        self.responder: Responder = responder or echo_responder
        """The reply builder; may be replaced between requests."""
        self.honours: tuple[CapParam, ...] = tuple(honours)
        """The output-cap parameters the server obeys."""
        self.latency = latency
        """Seconds added before every response."""
        self.model = model
        """Default model name."""
        self.fault_rate = fault_rate
        """Probability that a request past the queue gets a random fault."""
        self._faults = tuple(faults)
        self._rng = random.Random(seed)
        self._queue: collections.deque[Fault | None] = collections.deque()
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._id_prefix = uuid.uuid4().hex[:8]
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server was already started (a server is single-use).
        """
        if self._started:
            raise RuntimeError("FakeOpenAIServer.start() called twice; create a new server")
        self._started = True
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits at most one poll interval
            name=f"FakeOpenAIServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut any connection still open, and join every thread.

        Idempotent. Returns promptly even while a ``timeout`` fault is holding a request.
        """
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping in latency or a timeout fault
        httpd.shutdown()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)  # unblocks a handler stuck reading or writing
        httpd.server_close()
        thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is started and not yet stopped."""
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The TCP port the server listens on.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, ready for ``openai.AsyncOpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and accounting ------------------------------------------------------------

    def enqueue_faults(self, faults: Iterable[Fault | None]) -> None:
        """Script the next chat requests: one entry each, ``None`` meaning a normal reply.

        Args:
            faults: Faults in the order requests will receive them; appended to the queue.
        """
        with self._lock:
            self._queue.extend(faults)

    @property
    def pending_faults(self) -> int:
        """How many queued entries no request has consumed yet."""
        with self._lock:
            return len(self._queue)

    @property
    def log(self) -> list[RequestRecord]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def requests(self) -> int:
        """How many HTTP requests the server has received (every path, retries included)."""
        with self._lock:
            return len(self._records)

    def billed_usage_totals(self) -> FakeUsage:
        """Sum the usage of every reply the server generated, delivered or not (what a real
        server would bill): the figure a ledger must never undercount."""
        total = FakeUsage()
        for record in self.log:
            if record.billed is not None:
                total = total + record.billed
        return total

    def sent_usage_totals(self) -> FakeUsage:
        """Sum the usage the server actually delivered to clients.

        Returns:
            The summed usage; ``cached_tokens`` / ``reasoning_tokens`` stay ``None`` unless at
            least one response reported them.
        """
        total = FakeUsage()
        for record in self.log:
            if record.usage is not None:
                total = total + record.usage
        return total

    # -- request handling (called from handler threads) ---------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if not add:
                self._connections.discard(conn)
                return
            self._connections.add(conn)
            if self._stopping.is_set():  # accepted while stop() ran: cut it like the others
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    _bills_timeouts = False
    """Whether a ``timeout`` fault generates (bills) the reply before withholding it."""

    def _hold(self, handler: _Handler) -> Callable[[float], object]:
        """How a ``timeout`` fault waits: here until the hold ends or the server stops."""
        return self._stopping.wait

    def _next_fault(self) -> Fault | None:
        # Called with the lock held, in arrival order, so draws are reproducible.
        if self._queue:
            return self._queue.popleft()
        if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
            return self._rng.choice(self._faults)
        return None

    def _publish(self, record: RequestRecord) -> None:
        with self._lock:
            self._records[record.index] = record

    def _dispatch(self, handler: _Handler) -> None:
        started = time.monotonic()
        method = handler.command
        path = urlsplit(handler.path).path.rstrip("/")
        body, body_error = _read_json_body(handler) if method == "POST" else (None, None)
        is_chat = method == "POST" and path == "/v1/chat/completions"
        stream = body is not None and body.get("stream") is True
        retry_header = handler.headers.get("x-stainless-retry-count", "")
        with self._lock:
            index = len(self._records)
            fault = self._next_fault() if is_chat and body_error is None else None
            record = RequestRecord(
                index=index,
                method=method,
                path=path,
                body=body,
                fault=fault,
                status=None,
                usage=None,
                request_id=f"req_{self._id_prefix}{index:06d}",
                stream=stream,
                retry_count=int(retry_header) if retry_header.isdigit() else None,
                started_at=started,
            )
            self._records.append(record)
        ex = Exchange(handler, record, self._publish)
        try:
            if self.latency:
                self._stopping.wait(self.latency)
            if is_chat and body_error is None and body is not None:
                serve_chat(
                    ex,
                    body,
                    fault,
                    responder=self.responder,
                    honours=self.honours,
                    model=self.model,
                    hold=self._hold(handler),
                    bill_timeouts=self._bills_timeouts,
                )
            elif is_chat:
                ex.note_error(body_error or "invalid request body")
                ex.send_error(400, body_error or "invalid request body", "invalid_request_error")
            elif method == "GET" and path == "/v1/models":
                data = [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": "stratagem"}
                ]
                ex.send_json(200, {"object": "list", "data": data})
            else:
                ex.send_error(404, f"Invalid URL ({method} {path})", "invalid_request_error")
        finally:
            ex.close()


def _read_json_body(handler: _Handler) -> tuple[dict[str, Any] | None, str | None]:
    length_header = handler.headers.get("content-length") or ""
    length = int(length_header) if length_header.isdigit() else 0
    raw = handler.rfile.read(length) if length else b""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "We could not parse the JSON body of your request."
    if not isinstance(body, dict):
        return None, "The request body must be a JSON object."
    if not isinstance(body.get("messages"), list):
        return body, "Missing required parameter: 'messages'."
    return body, None
