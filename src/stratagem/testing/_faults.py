"""Faults the fake OpenAI server can inject, one :class:`Fault` per HTTP request.

Each kind mimics a failure of a real OpenAI-compatible endpoint; after the colon, what the
``openai`` SDK (3.x) turns it into:

* ``rate_limit``: 429 with ``retry-after`` / ``retry-after-ms``; ``RateLimitError``, retried.
* ``server_error``: 500, 502, 503, ... with OpenAI's error body; ``InternalServerError``, retried.
* ``timeout``: holds the request, then closes without a reply; ``APITimeoutError``, retried.
* ``malformed_json``: 200 whose body (or one SSE event) is broken; a JSON decoding error.
* ``missing_usage``: a normal 200 reply without ``usage``; ``response.usage is None``.
* ``stream_cut``: closes the connection mid-body; ``APIConnectionError``, not retried when
  streaming (the SDK never replays a stream).
* ``context_length``: 400 ``context_length_exceeded``; ``BadRequestError``, not retried.

``stream_cut(keep_usage=True)`` is the "failure with usage" case: a streamed reply delivers its
usage chunk and then breaks before ``data: [DONE]``, so the client saw tokens that were billed
although the call ended in an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["MAX_HOLD_SECONDS", "Fault", "FaultKind"]

FaultKind: TypeAlias = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "malformed_json",
    "missing_usage",
    "stream_cut",
    "context_length",
]
"""The kinds of fault :class:`Fault` can describe."""

MAX_HOLD_SECONDS = 30.0
"""Upper bound on how long a ``timeout`` fault holds a request, so a test can never hang on it."""


@dataclass(frozen=True)
class Fault:
    """One injected failure. Build it with the classmethods rather than the constructor.

    Attributes:
        kind: Which failure to produce.
        status: HTTP status sent for ``rate_limit``, ``server_error`` and ``context_length``.
        retry_after: Value of the ``retry-after`` header in seconds (may be fractional).
        retry_after_ms: Value of the ``retry-after-ms`` header in milliseconds.
        hold_seconds: How long a ``timeout`` fault holds the request before closing it.
        after_chunks: How many content chunks a ``stream_cut`` sends before cutting.
        keep_usage: Whether a ``stream_cut`` first delivers the whole reply including its usage
            chunk, and only then cuts the connection instead of sending ``data: [DONE]``.
        max_context: The context window quoted by a ``context_length`` error message.
    """

    kind: FaultKind
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    hold_seconds: float = 0.0
    after_chunks: int = 0
    keep_usage: bool = False
    max_context: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hold_seconds <= MAX_HOLD_SECONDS:
            raise ValueError(
                f"Fault.hold_seconds must be between 0 and {MAX_HOLD_SECONDS}, "
                f"got {self.hold_seconds}"
            )
        if self.after_chunks < 0:
            raise ValueError(f"Fault.after_chunks must be >= 0, got {self.after_chunks}")
        for name in ("retry_after", "retry_after_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"Fault.{name} must be >= 0, got {value}")

    @classmethod
    def rate_limit(
        cls, retry_after: float | None = 0.01, *, retry_after_ms: float | None = None
    ) -> Fault:
        """A 429 ``rate_limit_exceeded`` error.

        Args:
            retry_after: Seconds for the ``retry-after`` header, or ``None`` to omit it. The
                small default keeps SDK retries fast in tests.
            retry_after_ms: Milliseconds for the ``retry-after-ms`` header, or ``None`` to omit
                it. The SDK prefers it over ``retry-after``.

        Returns:
            The fault.
        """
        return cls("rate_limit", status=429, retry_after=retry_after, retry_after_ms=retry_after_ms)

    @classmethod
    def server_error(
        cls,
        status: int = 500,
        *,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
    ) -> Fault:
        """A 5xx error with OpenAI's ``server_error`` body.

        Args:
            status: The HTTP status, 500 to 599 (503 for an overloaded backend).
            retry_after: Seconds for the ``retry-after`` header, or ``None`` to omit it (the SDK
                then backs off from 0.5 s).
            retry_after_ms: Milliseconds for the ``retry-after-ms`` header, or ``None``.

        Returns:
            The fault.

        Raises:
            ValueError: If ``status`` is not a 5xx code.
        """
        if not 500 <= status <= 599:
            raise ValueError(f"Fault.server_error(status=...) must be 5xx, got {status}")
        return cls(
            "server_error", status=status, retry_after=retry_after, retry_after_ms=retry_after_ms
        )

    @classmethod
    def timeout(cls, seconds: float = 5.0) -> Fault:
        """Hold the request without answering, then close the connection.

        Set the client's timeout below ``seconds``. The hold ends early when the server stops.

        Args:
            seconds: How long to hold, at most :data:`MAX_HOLD_SECONDS`.

        Returns:
            The fault.
        """
        return cls("timeout", hold_seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 reply whose JSON body (or, when streaming, one SSE event) does not parse.

        Returns:
            The fault.
        """
        return cls("malformed_json", status=200)

    @classmethod
    def missing_usage(cls) -> Fault:
        """A normal 200 reply without ``usage`` (no usage chunk either, when streaming).

        Returns:
            The fault.
        """
        return cls("missing_usage", status=200)

    @classmethod
    def stream_cut(cls, after_chunks: int = 1, *, keep_usage: bool = False) -> Fault:
        """Close the connection in the middle of the response body.

        A streamed reply sends ``after_chunks`` content chunks and stops; a non-streamed reply
        sends half of its JSON body.

        Args:
            after_chunks: Content chunks delivered before the cut (streaming only).
            keep_usage: Deliver every chunk, including the usage chunk, and cut just before
                ``data: [DONE]`` (streaming only; overrides ``after_chunks``).

        Returns:
            The fault.
        """
        return cls("stream_cut", status=200, after_chunks=after_chunks, keep_usage=keep_usage)

    @classmethod
    def context_length(cls, max_context: int = 8192) -> Fault:
        """A 400 ``context_length_exceeded`` error with OpenAI's exact body shape.

        Args:
            max_context: The context window quoted in the error message.

        Returns:
            The fault.
        """
        return cls("context_length", status=400, max_context=max_context)
