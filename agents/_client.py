"""ModelClient: the one place in stratagem that makes LLM calls.

Every HTTP-level attempt goes::

    Budget.reserve -> backend.send (output cap clamped) -> usage (provider's, or a flagged
    tiktoken estimate) -> Budget.commit -> ledger append (durable) -> one ``llm.call`` event

and only then is the result handed back. Failed attempts are recorded too: with the usage the
server reported (charged), or with zero tokens and status ``error`` when nothing came back.
Retries live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from stratagem._types import CallStatus
from stratagem.agents._backend import ChatBackend, ChatRequest, ChatResponse, Message
from stratagem.agents._defaults import default_backend
from stratagem.agents._loops import PerLoop
from stratagem.budgets import (
    Budget,
    LedgerEntry,
    Pricing,
    Reservation,
    TokenLedger,
    Usage,
    count_chat_tokens,
    count_text_tokens,
    new_call_id,
)
from stratagem.errors import BudgetExceeded, ModelError, TransientModelError
from stratagem.logging import get_logger

__all__ = ["Completion", "ModelClient", "RetryPolicy"]

_log = get_logger("stratagem.llm")

current_task_id: ContextVar[str | None] = ContextVar("stratagem_task_id", default=None)
"""The LangGraph task id of the node running in this context (set by graph nodes); used for
ledger rows when a call does not name one."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The single retry layer: which failures are retried, how often and how patiently.

    Retried: :class:`~stratagem.errors.TransientModelError` (429, 5xx, 408, timeouts, dropped
    connections, malformed or truncated responses). Never retried: other 4xx, context
    overflow, budget refusals.

    Attributes:
        max_attempts: Attempts per call, the first included.
        initial_delay_s: Wait before the first retry.
        backoff: Multiplier per further retry.
        max_delay_s: Cap on the computed wait.
        max_retry_after_s: A server's ``Retry-After`` is honoured up to this; longer asks
            give up rather than stall the run.
        jitter: Up to this fraction is added at random to each wait.
    """

    max_attempts: int = 4
    initial_delay_s: float = 0.5
    backoff: float = 2.0
    max_delay_s: float = 8.0
    max_retry_after_s: float = 60.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``retry`` (1-based); ``None`` to give up."""
        if retry_after is not None:
            if retry_after > self.max_retry_after_s:
                return None
            return retry_after
        base = min(self.max_delay_s, self.initial_delay_s * self.backoff ** (retry - 1))
        return base * (1 + self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class Completion:
    """The result of one logical call, after any retries.

    Attributes:
        text: The completion text of the successful attempt.
        usage: That attempt's usage (``usage.source == "estimate"`` if the server sent none).
        finish_reason: ``stop``, ``length``, ...
        model: The model that answered.
        role: The role that asked.
        entry: The ledger row of the successful attempt.
        attempts: Ledger rows of every attempt, failed ones included (the billed view).
    """

    text: str
    usage: Usage
    finish_reason: str | None
    model: str
    role: str
    entry: LedgerEntry
    attempts: tuple[LedgerEntry, ...] = field(default=())

    @property
    def call_id(self) -> str:
        """The call id of the successful attempt."""
        return self.entry.call_id

    @property
    def billed_tokens(self) -> int:
        """Tokens of every attempt, including failed ones."""
        return sum(e.total_tokens for e in self.attempts)


@dataclass
class _LoopState:
    """What the calls made in one event loop share: per-endpoint limits and the send gate."""

    limits: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)


_LOOPS: PerLoop[_LoopState] = PerLoop(_LoopState)


class ModelClient:
    """Makes every LLM call: budget, request, usage, ledger, log, retries.

    Args:
        backend: The default backend for every role. ``None``: resolved on first use from
            the environment (``STRATAGEM_BASE_URL``/``OPENAI_BASE_URL`` and
            ``STRATAGEM_MODEL``), else the embedded local model.
        roles: A backend per role, overriding the default (e.g. a stronger judge).
        ledger: Where every attempt is recorded (an in-memory ledger if omitted).
        budget: Reservations and caps; no budget means no limit.
        pricing: Prices for ``cost_usd`` (built-in table by default).
        retry: The retry policy.
        concurrency: Requests in flight per endpoint (base URL); defaults per backend kind.
        run_id: Stamped on every row. thread_id likewise.
        thread_id: The LangGraph thread of the run.
        labels: Free-form labels stamped on every row (topology, task, seed, ...).
        input_margin: Safety margin added to the tiktoken input estimate when reserving.
        seed: Seeds the retry jitter, for reproducible runs.
    """

    def __init__(
        self,
        backend: ChatBackend | None = None,
        *,
        roles: Mapping[str, ChatBackend] | None = None,
        ledger: TokenLedger | None = None,
        budget: Budget | None = None,
        pricing: Pricing | None = None,
        retry: RetryPolicy | None = None,
        concurrency: Mapping[str, int] | None = None,
        run_id: str = "",
        thread_id: str = "",
        labels: Mapping[str, str] | None = None,
        input_margin: float = 0.05,
        seed: int | None = None,
    ) -> None:
        self._backend = backend
        self._roles = dict(roles or {})
        self.ledger = ledger if ledger is not None else TokenLedger()
        self.budget = budget
        self.pricing = pricing if pricing is not None else Pricing.default()
        self.retry = retry if retry is not None else RetryPolicy()
        self._concurrency = dict(concurrency or {})
        self.run_id = run_id
        self.thread_id = thread_id
        self.labels = dict(labels or {})
        self.input_margin = input_margin
        self._rng = random.Random(seed)
        self._sleep = asyncio.sleep

    # -- configuration ---------------------------------------------------------------------

    def backend_for(self, role: str) -> ChatBackend:
        """The backend that serves ``role``."""
        backend = self._roles.get(role)
        if backend is not None:
            return backend
        if self._backend is None:
            self._backend = default_backend()
        return self._backend

    def bind(
        self,
        *,
        run_id: str | None = None,
        thread_id: str | None = None,
        budget: Budget | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ModelClient:
        """A client for another run: same backends, ledger, pricing and retry policy."""
        other = ModelClient.__new__(ModelClient)
        other.__dict__.update(self.__dict__)
        if run_id is not None:
            other.run_id = run_id
        if thread_id is not None:
            other.thread_id = thread_id
        if budget is not None:
            other.budget = budget
        if labels is not None:
            other.labels = {**self.labels, **labels}
        return other

    # -- calls -----------------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        role: str,
        node: str = "",
        branch: str | None = None,
        max_output: int = 512,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
    ) -> Completion:
        """Ask ``role``'s model for a completion, within budget, recording every attempt.

        ``allowance`` caps this call's own total (input estimate + output), e.g. a parallel
        branch's share reserved before a fan-out: the output cap is clamped to
        ``allowance - input estimate``.

        Raises:
            BudgetExceeded: If the budget cannot fit even a minimal call (nothing is sent).
            ContextLengthExceeded: If the prompt does not fit the model (not retried).
            ModelError: If the endpoint refused the request, or kept failing through every
                retry; every attempt is in the ledger.
            LedgerError: If an attempt could not be recorded durably.
        """
        backend = self.backend_for(role)
        request = ChatRequest(
            messages=list(messages),
            model=backend.model,
            max_output=max_output,
            temperature=temperature,
            seed=seed,
            stop=stop,
            stream=stream,
            extra=dict(extra or {}),
            role=role,
            node=node,
        )
        ctx = _CallContext(backend, role, node, branch, task_id or current_task_id.get(),
                           {**self.labels, **(labels or {})})
        estimate = self._input_estimate(messages, backend.model)
        if allowance is not None:
            room = allowance - estimate
            # The same floor Budget.reserve applies: a call capped at a few tokens only bills
            # its prompt.
            floor = min(max_output, self.budget.min_output_tokens if self.budget else 1)
            if room < floor:
                raise BudgetExceeded(kind="tokens", role=role, limit=allowance,
                                     requested=estimate + floor, spent=0)
            request = replace(request, max_output=min(max_output, room))
            max_output = request.max_output
        for number in range(1, self.retry.max_attempts + 1):
            reservation = self._reserve(role, estimate, max_output, backend.model)
            sent = replace(request, max_output=reservation.max_output) if reservation else request
            att = _Attempt(number, reservation)
            try:
                loop_state = await _LOOPS.get()
                async with self._limit(backend, loop_state.limits):
                    response = await _send_promptly(backend, sent, loop_state.gate)
            except asyncio.CancelledError as cancel:
                usage, request_id = self._usage_when_cancelled(cancel, messages, sent)
                self._record(ctx, att, usage, status="cancelled",
                             error="cancelled (sibling branch or shutdown)",
                             request_id=request_id)
                raise
            except ModelError as exc:
                usage = self._usage_of_failure(exc, messages, backend.model)
                self._record(ctx, att, usage, status="error", error=str(exc),
                             request_id=exc.request_id)
                if not isinstance(exc, TransientModelError) or number == self.retry.max_attempts:
                    raise self._final_error(exc, number) from exc
                wait = self.retry.delay(number, exc.retry_after, self._rng)
                if wait is None:
                    raise ModelError(
                        f"{exc} (the server asked to wait {exc.retry_after:.0f} s, more than "
                        f"the {self.retry.max_retry_after_s:.0f} s allowed; gave up)",
                        status_code=exc.status_code, request_id=exc.request_id,
                    ) from exc
                await self._sleep(wait)
                continue
            except Exception as exc:
                # A user backend that broke its contract: record the attempt, then re-raise.
                self._record(ctx, att, Usage.zero(), status="error",
                             error=f"{type(exc).__name__}: {exc}")
                raise
            usage = response.usage or self._estimate(messages, response.text, backend.model,
                                                     cap=sent.max_output)
            entry = self._record(ctx, att, usage, status="ok", request_id=response.request_id)
            return _completion(response, usage, ctx, entry)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def complete_sync(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        """Blocking :meth:`complete`, for scripts and sync graph nodes (not inside a loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "complete_sync() was called inside a running event loop: use "
                "`await client.complete(...)` there"
            )

        async def once() -> Completion:
            try:
                return await self.complete(messages, **kwargs)
            finally:
                await self.aclose()

        return asyncio.run(once())

    async def aclose(self) -> None:
        """Close the connections the backends hold for the running event loop."""
        backends = {id(b): b for b in [self._backend, *self._roles.values()] if b is not None}
        for b in backends.values():
            await b.aclose()

    # -- internals -------------------------------------------------------------------------

    def _input_estimate(self, messages: Sequence[Message], model: str) -> int:
        return int(count_chat_tokens(messages, model) * (1 + self.input_margin)) + 1

    def _reserve(self, role: str, estimate: int, max_output: int, model: str) -> Reservation | None:
        if self.budget is None:
            return None
        return self.budget.reserve(role, estimate, max_output, model=model)

    def _limit(self, backend: ChatBackend, limits: dict[str, asyncio.Semaphore]
               ) -> asyncio.Semaphore:
        sem = limits.get(backend.endpoint)
        if sem is None:
            size = self._concurrency.get(backend.endpoint,
                                         backend.capabilities.default_concurrency)
            sem = limits[backend.endpoint] = asyncio.Semaphore(max(1, size))
        return sem

    def _estimate(self, messages: Sequence[Message], text: str, model: str,
                  cap: int | None = None) -> Usage:
        completion = count_text_tokens(text, model)
        if cap is not None:
            # The server honoured the cap it was sent; tiktoken (another tokenizer) may count
            # more, which would commit more than was reserved.
            completion = min(completion, cap)
        return Usage(count_chat_tokens(messages, model), completion, None, None, "estimate")

    def _usage_when_cancelled(self, cancel: asyncio.CancelledError,
                              messages: Sequence[Message], sent: ChatRequest
                              ) -> tuple[Usage, str | None]:
        """What a cancelled attempt cost: nothing, unless its request had already finished
        (cancelled between the reply and the caller resuming), in which case its usage."""
        outcome: asyncio.Future[ChatResponse] | None = getattr(cancel, _OUTCOME, None)
        if outcome is None or outcome.cancelled():
            return Usage.zero(), None
        failure = outcome.exception()
        if isinstance(failure, ModelError):
            return self._usage_of_failure(failure, messages, sent.model), failure.request_id
        if failure is not None:
            return Usage.zero(), None
        response = outcome.result()
        usage = response.usage or self._estimate(messages, response.text, sent.model,
                                                 cap=sent.max_output)
        return usage, response.request_id

    def _usage_of_failure(self, exc: ModelError, messages: Sequence[Message],
                          model: str) -> Usage:
        if exc.usage is not None:
            return exc.usage
        partial = getattr(exc, "partial_text", None)
        if partial is not None:
            # A stream cut short generated tokens the server never reported: estimate them.
            return self._estimate(messages, partial, model)
        return Usage.zero()

    def _final_error(self, exc: ModelError, attempts: int) -> ModelError:
        if isinstance(exc, TransientModelError):
            return ModelError(
                f"gave up after {attempts} attempt(s): {exc}",
                status_code=exc.status_code, request_id=exc.request_id,
            )
        return exc

    def _record(
        self,
        ctx: _CallContext,
        att: _Attempt,
        usage: Usage,
        *,
        status: CallStatus,
        error: str | None = None,
        request_id: str | None = None,
    ) -> LedgerEntry:
        backend = ctx.backend
        latency = time.perf_counter() - att.t0
        cost = self.pricing.cost(backend.model, usage)
        if self.budget is not None and att.reservation is not None:
            self.budget.commit(att.reservation, usage, cost)
        entry = LedgerEntry(
            call_id=att.call_id,
            run_id=self.run_id,
            thread_id=self.thread_id,
            task_id=ctx.task_id,
            attempt=att.number,
            role=ctx.role,
            node=ctx.node,
            branch=ctx.branch,
            model=backend.model,
            backend=backend.name,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=cost,
            latency_s=latency,
            usage_source=usage.source,
            status=status,
            error=error,
            request_id=request_id,
            started_at=att.started,
            labels=ctx.labels,
        )
        self.ledger.append(entry)
        ctx.rows.append(entry)
        _log.info(
            "llm.call",
            **entry.model_dump(mode="json", exclude={"labels", "started_at"}),
            **{f"label_{k}": v for k, v in entry.labels.items()},
        )
        return entry


_SEND_STEPS = 3
"""Event-loop steps a request gets to reach the wire before the next call may start its own."""
_OUTCOME = "stratagem_outcome"
"""Attribute of a CancelledError carrying the request's finished task, if it had finished."""


def _retrieve(task: asyncio.Future[ChatResponse]) -> None:
    if not task.cancelled():
        task.exception()


async def _send_promptly(backend: ChatBackend, request: ChatRequest,
                         gate: asyncio.Lock) -> ChatResponse:
    """``backend.send(request)``, with the request on the wire before another call starts.

    In a fan-out every branch becomes ready in the same event-loop step. Left alone, each
    branch prepares its request and yields (aiohttp on Python 3.11 writes the bytes from a
    task of its own), so no request leaves before all of them are prepared, all replies come
    back together, and their processing queues up: the fan-out takes latency + the CPU time
    of every call. Letting one request at a time take the few steps it needs to be sent
    staggers the replies by the preparation time instead, and each is processed while later
    ones are still in flight (bench/fanout.py measures the difference). A request that needs
    longer (a new TCP or TLS connection) stops holding the others back after those steps.

    If the caller is cancelled, an unfinished request is cancelled with it; a finished one
    rides on the CancelledError (attribute ``stratagem_outcome``) so that its usage is
    recorded, not lost.
    """
    task: asyncio.Future[ChatResponse] | None = None
    try:
        async with gate:
            task = asyncio.ensure_future(backend.send(request))
            for _ in range(_SEND_STEPS):
                if task.done():
                    break
                await asyncio.sleep(0)
        return await task
    except asyncio.CancelledError as cancel:
        if task is not None:
            if task.done():
                setattr(cancel, _OUTCOME, task)
            else:
                task.cancel()  # never leave a request running that nobody will record
                # (and if it ends with an error anyway, retrieve it: nothing else will)
                task.add_done_callback(_retrieve)
        raise


@dataclass(frozen=True, slots=True)
class _CallContext:
    backend: ChatBackend
    role: str
    node: str
    branch: str | None
    task_id: str | None
    labels: dict[str, str]
    rows: list[LedgerEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Attempt:
    number: int
    reservation: Reservation | None
    call_id: str = field(default_factory=new_call_id)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)


def _completion(
    response: ChatResponse, usage: Usage, ctx: _CallContext, entry: LedgerEntry
) -> Completion:
    return Completion(
        text=response.text,
        usage=usage,
        finish_reason=response.finish_reason,
        model=response.model or ctx.backend.model,
        role=ctx.role,
        entry=entry,
        attempts=tuple(ctx.rows),
    )
