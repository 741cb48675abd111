"""Writing one fake-server response to the socket, and recording what actually went out.

:class:`Exchange` publishes a request's final outcome to the server log *before* writing the
last bytes of the reply, so by the time a client has its answer the log already shows it. If
the client hangs up first, the record is corrected: its usage becomes what was delivered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from ._replies import (
    Completion,
    FakeUsage,
    Responder,
    complete,
    completion_json,
    count_prompt_tokens,
    output_cap,
    stream_chunks,
)

if TYPE_CHECKING:
    from ._fake_server import RequestRecord
    from ._faults import Fault

__all__ = ["Exchange", "serve_chat"]

_MALFORMED = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0,'

_SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The server is overloaded or not ready yet.",
}


class Exchange:
    """One request's response: headers, body or SSE events, and its log record."""

    def __init__(
        self,
        handler: BaseHTTPRequestHandler,
        record: RequestRecord,
        publish: Callable[[RequestRecord], None],
    ) -> None:
        self._handler = handler
        self._record = record
        self._publish = publish
        self._final = False
        self._broken = False
        self._delivered: FakeUsage | None = None

    def bill(self, usage: FakeUsage) -> None:
        """Note that the reply was generated (billed), whatever happens to it next."""
        self._commit(billed=usage)

    def _commit(self, **changes: Any) -> None:
        self._record = replace(self._record, **changes)
        self._publish(self._record)

    def _write(self, data: bytes) -> bool:
        if self._broken:
            return False
        try:
            self._handler.wfile.write(data)
            self._handler.wfile.flush()
        except OSError:
            self._broken = True
        return not self._broken

    def _headers(
        self, status: int, content_type: str, extra: Mapping[str, str], length: int | None
    ) -> None:
        h = self._handler
        h.close_connection = True
        try:
            h.send_response(status)
            h.send_header("content-type", content_type)
            h.send_header("x-request-id", self._record.request_id)
            h.send_header("connection", "close")
            if length is None:
                h.send_header("transfer-encoding", "chunked")
            else:
                h.send_header("content-length", str(length))
            for name, value in extra.items():
                h.send_header(name, value)
            h.end_headers()
        except OSError:
            self._broken = True

    @property
    def request_id(self) -> str:
        """The ``x-request-id`` this response carries."""
        return self._record.request_id

    def note_error(self, message: str) -> None:
        """Record why the server itself failed this request."""
        self._commit(error=message)

    def finish(self, status: int, usage: FakeUsage | None) -> None:
        """Publish the planned final outcome; call it just before the last bytes go out."""
        self._final = True
        self._commit(status=status, usage=usage, finished_at=time.monotonic())

    def send_bytes(
        self,
        status: int,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        usage: FakeUsage | None = None,
        cut_at: int | None = None,
    ) -> None:
        """Send a whole JSON response, or only its first ``cut_at`` bytes before hanging up."""
        self.finish(status, usage if cut_at is None else None)
        self._headers(status, "application/json", headers or {}, len(data))
        if self._write(data[:cut_at]) and cut_at is None:
            self._delivered = usage

    def send_json(self, status: int, obj: Any, *, headers: Mapping[str, str] | None = None) -> None:
        """Send ``obj`` as a JSON response."""
        self.send_bytes(status, json.dumps(obj).encode(), headers=headers)

    def send_error(
        self,
        status: int,
        message: str,
        type_: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send an error in OpenAI's ``{"error": {...}}`` shape."""
        error = {"message": message, "type": type_, "param": param, "code": code}
        self.send_json(status, {"error": error}, headers=headers)

    def start_stream(self) -> None:
        """Send the headers of a chunked ``text/event-stream`` 200 response."""
        self._commit(status=200)
        self._headers(200, "text/event-stream; charset=utf-8", {}, None)

    def event(self, payload: str, *, usage: FakeUsage | None = None) -> None:
        """Send one SSE ``data:`` event as one HTTP chunk; ``usage`` if it carries usage."""
        data = f"data: {payload}\n\n".encode()
        if self._write(b"%x\r\n%s\r\n" % (len(data), data)) and usage is not None:
            self._delivered = usage

    def end_stream(self) -> None:
        """Send the terminating zero-length chunk. Skipping it is how a stream gets cut."""
        self._write(b"0\r\n\r\n")

    def close(self) -> None:
        """Make the record final: whatever was not published yet, or a client that hung up."""
        if self._broken:
            self._commit(
                usage=self._delivered,
                finished_at=self._record.finished_at or time.monotonic(),
                error=self._record.error or "client disconnected",
            )
        elif not self._final:
            self._commit(usage=self._delivered, finished_at=time.monotonic())


def _retry_headers(fault: Fault) -> dict[str, str]:
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    return headers


def _send_fault_error(ex: Exchange, body: Mapping[str, Any], fault: Fault) -> None:
    status = fault.status or 500
    headers = _retry_headers(fault)
    if fault.kind == "rate_limit":
        message = "Rate limit reached for requests per min (RPM). Please try again shortly."
        ex.send_error(status, message, "requests", code="rate_limit_exceeded", headers=headers)
    elif fault.kind == "context_length":
        message = (
            f"This model's maximum context length is {fault.max_context} tokens. However, your "
            f"messages resulted in {count_prompt_tokens(body)} tokens. Please reduce the length "
            "of the messages."
        )
        ex.send_error(
            status,
            message,
            "invalid_request_error",
            code="context_length_exceeded",
            param="messages",
        )
    else:
        message = _SERVER_ERROR_MESSAGES.get(status, _SERVER_ERROR_MESSAGES[500])
        ex.send_error(status, message, "server_error", headers=headers)


def _generate(
    ex: Exchange,
    body: dict[str, Any],
    *,
    responder: Responder,
    honours: Sequence[str],
    model: str,
) -> Completion | None:
    """The reply, billed; ``None`` (after a 500) when the responder failed."""
    try:
        reply = responder(body)
    except Exception as exc:  # a broken test responder must show up, not hang the client
        ex.note_error(f"responder raised {exc!r}")
        ex.send_error(500, f"fake responder raised {exc!r}", "server_error")
        return None
    c = complete(
        body,
        reply,
        output_cap(body, honours),
        completion_id="chatcmpl-" + ex.request_id.removeprefix("req_"),
        created=int(time.time()),
        model=str(body.get("model") or model),
    )
    ex.bill(c.usage)
    return c


def serve_chat(
    ex: Exchange,
    body: dict[str, Any],
    fault: Fault | None,
    *,
    responder: Responder,
    honours: Sequence[str],
    model: str,
    hold: Callable[[float], object],
    bill_timeouts: bool = False,
) -> None:
    """Answer one ``POST /v1/chat/completions``, applying ``fault`` if there is one.

    With ``bill_timeouts`` a ``timeout`` fault first generates (and bills) the reply, then
    withholds it, as a real server that answers too late does.
    """
    kind = fault.kind if fault is not None else None
    if fault is not None and kind == "timeout":
        if bill_timeouts:
            c = _generate(ex, body, responder=responder, honours=honours, model=model)
            if c is None:
                return
        hold(fault.hold_seconds)
        return  # close without a reply; the client has timed out by now
    if fault is not None and kind in ("rate_limit", "server_error", "context_length"):
        _send_fault_error(ex, body, fault)
        return
    c = _generate(ex, body, responder=responder, honours=honours, model=model)
    if c is None:
        return
    stream = body.get("stream") is True
    if not stream:
        with_usage = kind != "missing_usage"
        data = json.dumps(completion_json(c, with_usage=with_usage)).encode()
        if kind == "malformed_json":
            ex.send_bytes(200, _MALFORMED)
        elif kind == "stream_cut":
            ex.send_bytes(200, data, cut_at=len(data) // 2)
        else:
            ex.send_bytes(200, data, usage=c.usage if with_usage else None)
        return

    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    with_usage = include_usage and kind != "missing_usage"
    chunks = [json.dumps(chunk) for chunk in stream_chunks(c, with_usage=with_usage)]
    ex.start_stream()
    if fault is not None and kind == "stream_cut" and not fault.keep_usage:
        head = chunks[: 1 + min(fault.after_chunks, len(c.content.split()))]
        ex.finish(200, None)
        for chunk in head:
            ex.event(chunk)
        return  # no terminating chunk: the client sees an incomplete body
    if kind == "malformed_json":
        ex.event(chunks[0])
        ex.finish(200, None)
        ex.event(_MALFORMED.decode())
        ex.event("[DONE]")
        ex.end_stream()
        return
    body_chunks, usage_chunk = (chunks[:-1], chunks[-1]) if with_usage else (chunks, None)
    for chunk in body_chunks:
        ex.event(chunk)
    ex.finish(200, c.usage if with_usage else None)
    if usage_chunk is not None:
        ex.event(usage_chunk, usage=c.usage)
    if kind == "stream_cut":
        return  # keep_usage: the usage went out, [DONE] never does
    ex.event("[DONE]")
    ex.end_stream()
