"""ModelClient: makes LLM calls and records each attempt through the run's account.

Every HTTP-level attempt goes::

    Account.open_call (reserve) -> Account.sending (write-ahead intent) -> backend.send (output
    cap clamped) -> usage (the provider's; a flagged tiktoken estimate; or an upper bound when
    the reply was lost) -> Account.close_call (commit, ledger row, intent closed, ``llm.call``)

and only then is the result handed back. Failed attempts are recorded too: with the usage the
server reported, at an upper bound when the server may have billed a reply that was lost
(malformed, cut short, timed out, cancelled in flight), or at zero when it refused the request.
A logical call whose outcome an earlier execution of the run recorded is replayed, not sent.
Retries live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stratagem.agents._backend import ChatBackend, ChatRequest, ChatResponse, Message
from stratagem.agents._defaults import default_backend
from stratagem.agents._loops import PerLoop
from stratagem.budgets import (
    CALIBRATION,
    Account,
    Budget,
    LedgerEntry,
    OpenCall,
    Pricing,
    Replayed,
    TokenLedger,
    Usage,
    chat_tokens_bound,
    count_chat_tokens,
    count_text_tokens,
)
from stratagem.errors import (
    BudgetExceeded,
    ConfigError,
    ContextLengthExceeded,
    ModelError,
    OutputParseError,
    TransientModelError,
)
from stratagem.logging import get_logger

__all__ = ["Completion", "ModelClient", "RetryPolicy"]

_log = get_logger("stratagem.llm")


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
        replayed: The reply was recorded by an earlier execution of the run and replayed
            (nothing was sent this time).
        mean_logprob: The mean token log-probability of the reply, when the call asked for
            ``logprobs`` and the server sent them; ``None`` otherwise (unknown, not 0). Kept
            with the recorded reply (not in a ledger column), so a replayed reply has it too.
    """

    text: str
    usage: Usage
    finish_reason: str | None
    model: str
    role: str
    entry: LedgerEntry
    attempts: tuple[LedgerEntry, ...] = field(default=())
    replayed: bool = False
    mean_logprob: float | None = None

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
    probes: dict[str, asyncio.Lock] = field(default_factory=dict)


_LOOPS: PerLoop[_LoopState] = PerLoop(_LoopState)

_COUNT_BELOW = 1024
"""Prompts shorter than this many bytes are always counted (tiktoken takes ~90 us per KiB);
longer ones only when a cap applies to the call (``_roomy_bound``)."""


def _cal_key(backend: ChatBackend) -> tuple[str, str]:
    return backend.endpoint, backend.model


_VERIFIED: set[str] = set()
"""Endpoints that answered with provider usage once (their cap field is known to hold, or was
switched); shared by every client of the process."""


class ModelClient:
    """Makes every LLM call: request, retries, usage, and the record of each attempt.

    Recording and enforcement belong to the :class:`~stratagem.budgets.Account` the client
    records through: it holds the ledger, the budget and the one price table. The client has
    none of its own: ``client.ledger``, ``client.budget`` and ``client.pricing`` read the
    account's.

    Args:
        backend: The default backend for every role. ``None``: resolved on first use from
            the environment (``STRATAGEM_BASE_URL``/``OPENAI_BASE_URL`` and
            ``STRATAGEM_MODEL``), else the embedded local model.
        roles: A backend per role, overriding the default (e.g. a stronger judge).
        account: The account every attempt is recorded through. Omitted: one is built from
            ``ledger``, ``budget``, ``pricing``, ``run_id``, ``thread_id`` and ``labels``
            (shorthands that cannot be combined with ``account``).
        ledger: Where every attempt is recorded (an in-memory ledger if omitted).
        budget: Reservations and caps; no budget means no limit.
        pricing: Prices for ``cost_usd`` (the budget's, else the built-in table).
        retry: The retry policy.
        concurrency: Requests in flight per endpoint (base URL); defaults per backend kind.
        run_id: Stamped on every row. thread_id likewise.
        thread_id: The LangGraph thread of the run.
        labels: Free-form labels stamped on every row (topology, task, seed, ...).
        input_margin: Safety margin added to the tiktoken input estimate when reserving.
        seed: Seeds the retry jitter, for reproducible runs.

    Raises:
        ConfigError: If ``account`` is combined with ``ledger``, ``budget`` or ``pricing``.
    """

    def __init__(
        self,
        backend: ChatBackend | None = None,
        *,
        roles: Mapping[str, ChatBackend] | None = None,
        account: Account | None = None,
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
        if account is not None and (ledger is not None or budget is not None
                                    or pricing is not None):
            raise ConfigError("pass either account= or ledger=/budget=/pricing= (which build "
                              "one), not both")
        self._backend = backend
        self._roles = dict(roles or {})
        self.account = account if account is not None else Account(
            ledger, budget, pricing=pricing, run_id=run_id, thread_id=thread_id, labels=labels)
        """The account every attempt is recorded through."""
        self.retry = retry if retry is not None else RetryPolicy()
        self._concurrency = dict(concurrency or {})
        self.input_margin = input_margin
        self._rng = random.Random(seed)
        self._sleep = asyncio.sleep
        self._warned: set[str] = set()

    # -- what the account holds ------------------------------------------------------------

    @property
    def ledger(self) -> TokenLedger:
        """The account's ledger."""
        return self.account.ledger

    @property
    def budget(self) -> Budget | None:
        """The account's budget."""
        return self.account.budget

    @property
    def pricing(self) -> Pricing:
        """The account's price table."""
        return self.account.pricing

    @property
    def run_id(self) -> str:
        """The run the account records for."""
        return self.account.run_id

    @property
    def thread_id(self) -> str:
        """The LangGraph thread of the run."""
        return self.account.thread_id

    @property
    def labels(self) -> dict[str, str]:
        """Labels stamped on every row."""
        return self.account.labels

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
        node: str | None = None,
        task_id: str | None = None,
        branch: str | None = None,
    ) -> ModelClient:
        """A client with the same backends and retry policy recording for another run
        (``run_id``: an account for it on the same ledger), or for a narrower identity in
        the same run (``node``, ``task_id``, ``branch``: a bound view of the account)."""
        other = ModelClient.__new__(ModelClient)
        other.__dict__.update(self.__dict__)
        account = self.account
        if run_id is not None or budget is not None:
            account = account.for_run(
                run_id=account.run_id if run_id is None else run_id,
                thread_id=thread_id,
                budget=budget if budget is not None else account.budget,
                labels=labels,
            )
        elif labels is not None or thread_id is not None:
            account = account.for_run(run_id=account.run_id,
                                      thread_id=thread_id or account.thread_id,
                                      budget=account.budget, labels=labels)
        if node is not None or task_id is not None or branch is not None:
            account = account.bind(node=node, task_id=task_id, branch=branch)
        other.account = account
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
        logprobs: bool = False,
    ) -> Completion:
        """Ask ``role``'s model for a completion, within budget, recording every attempt.

        ``allowance`` caps this call's own total (input estimate + output), e.g. a parallel
        branch's share reserved before a fan-out: the output cap is clamped to
        ``allowance - input estimate``. ``logprobs`` asks for the tokens' log-probabilities
        (:attr:`Completion.mean_logprob`).

        Raises:
            BudgetExceeded: If the budget cannot fit even a minimal call (nothing is sent).
            ContextLengthExceeded: If the prompt does not fit the model (not retried).
            ModelError: If the endpoint refused the request, or kept failing through every
                retry; every attempt is in the ledger.
            LedgerError: If an attempt could not be recorded durably.
        """
        account = self.account
        backend = self.backend_for(role)
        ctx = _CallContext(backend, role, node or None, branch, task_id, dict(labels or {}))
        key = account.replay_key(role)
        recorded = account.recall(key)
        if recorded is not None:
            return _replayed(recorded, ctx)
        request = ChatRequest(
            messages=list(messages),
            model=backend.model,
            max_output=max_output,
            temperature=temperature,
            seed=seed,
            stop=stop,
            stream=stream,
            logprobs=logprobs,
            extra=dict(extra or {}),
            role=role,
            node=node,
        )
        roomy = None if allowance is not None else self._roomy_bound(role, messages,
                                                                      max_output, backend)
        if roomy is not None:  # no tokenizer run: the server's usage is what gets committed
            counted = estimate = roomy
        else:
            # tiktoken is not the model's tokenizer, and servers add templates and default
            # system prompts: scaled by what this endpoint has billed so far (never down).
            counted = CALIBRATION.prompt(_cal_key(backend), count_chat_tokens(messages,
                                                                              backend.model))
            estimate = int(counted * (1 + self.input_margin)) + 1
        if allowance is not None:
            room = allowance - estimate
            # The same floor Budget.reserve applies: a call capped at a few tokens only bills
            # its prompt.
            floor = min(max_output, self.budget.min_output_tokens if self.budget else 1)
            if room < floor:
                raise BudgetExceeded(kind="tokens", role=role, limit=allowance,
                                     requested=estimate + floor, spent=0, scope="allowance")
            request = replace(request, max_output=min(max_output, room))
            max_output = request.max_output
        for number in range(1, self.retry.max_attempts + 1):
            call = account.open_call(role=role, model=backend.model, backend=backend.name,
                                     input_estimate=estimate, prompt_estimate=counted,
                                     max_output=max_output, attempt=number, node=ctx.node,
                                     branch=branch, task_id=task_id, labels=ctx.labels)
            sent = replace(request, max_output=call.max_output)
            try:
                loop_state = await _LOOPS.get()
                async with self._limit(backend, loop_state.limits), \
                        self._probe(backend, loop_state.probes):
                    if backend.capabilities.bills_lost_replies:
                        # write-ahead: a crash from here on is "lost"
                        await account.asending(call)
                    response = await _send_promptly(backend, sent, loop_state.gate)
            except asyncio.CancelledError as cancel:
                usage, request_id = self._usage_when_cancelled(cancel, call, messages, sent)
                self._close(ctx, call, usage, status="cancelled",
                            error="cancelled (sibling branch or shutdown)", request_id=request_id)
                raise
            except ModelError as exc:
                usage = self._usage_of_failure(exc, call, messages, backend.model)
                await self._aclose(ctx, call, usage, status="error", error=str(exc),
                                   request_id=exc.request_id)
                if not isinstance(exc, TransientModelError) or number == self.retry.max_attempts:
                    error = self._final_error(exc, number)
                    account.remember_failure(key, [r.call_id for r in ctx.rows], error)
                    raise error from exc
                wait = self.retry.delay(number, exc.retry_after, self._rng)
                if wait is None:
                    error = ModelError(
                        f"{exc} (the server asked to wait {exc.retry_after:.0f} s, more than "
                        f"the {self.retry.max_retry_after_s:.0f} s allowed; gave up)",
                        status_code=exc.status_code, request_id=exc.request_id,
                    )
                    account.remember_failure(key, [r.call_id for r in ctx.rows], error)
                    raise error from exc
                await self._sleep(wait)
                continue
            except Exception as exc:
                # A user backend that broke its contract: record the attempt, then re-raise.
                self._close(ctx, call, Usage.zero(), status="error",
                            error=f"{type(exc).__name__}: {exc}")
                raise
            usage = response.usage or self._estimate(messages, response.text, backend.model,
                                                     cap=sent.max_output, backend=backend)
            self._check_cap(backend, sent, usage)
            if usage.source == "provider" and CALIBRATION.wants(_cal_key(backend)):
                CALIBRATION.observe(
                    _cal_key(backend), usage=usage,
                    counted_prompt=count_chat_tokens(messages, backend.model),
                    counted_text=count_text_tokens(response.text, backend.model)
                    if response.text else 0)
            outcome = Account.outcome(key, [*(r.call_id for r in ctx.rows), call.call_id],
                                      text=response.text, finish_reason=response.finish_reason,
                                      model=response.model, mean_logprob=response.mean_logprob)
            entry = await self._aclose(ctx, call, usage, status="ok",
                                       request_id=response.request_id, outcome=outcome)
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

    def _close(self, ctx: _CallContext, call: OpenCall, usage: Usage, **kw: Any) -> LedgerEntry:
        entry = self.account.close_call(call, usage, **kw)
        ctx.rows.append(entry)
        return entry

    async def _aclose(self, ctx: _CallContext, call: OpenCall, usage: Usage,
                      **kw: Any) -> LedgerEntry:
        """:meth:`_close` with the commit shared by the calls that end in the same step."""
        entry = await self.account.aclose_call(call, usage, **kw)
        ctx.rows.append(entry)
        return entry

    def _limit(self, backend: ChatBackend, limits: dict[str, asyncio.Semaphore]
               ) -> asyncio.Semaphore:
        sem = limits.get(backend.endpoint)
        if sem is None:
            size = self._concurrency.get(backend.endpoint,
                                         backend.capabilities.default_concurrency)
            sem = limits[backend.endpoint] = asyncio.Semaphore(max(1, size))
        return sem

    def _probe(self, backend: ChatBackend, probes: dict[str, asyncio.Lock]) -> _Probe:
        """Until an endpoint whose cap field can be switched has answered once, its calls
        go one at a time: if it ignores the cap it was sent, one reply overshoots, not a
        whole fan-out of them."""
        if not hasattr(backend, "use_cap_field") or backend.endpoint in self._warned:
            return _Probe(None)
        lock = probes.get(backend.endpoint)
        if lock is None:
            lock = probes[backend.endpoint] = asyncio.Lock()
        return _Probe(lock, _VERIFIED, backend.endpoint)

    def _check_cap(self, backend: ChatBackend, sent: ChatRequest, usage: Usage) -> None:
        if usage.source != "provider":
            return
        if hasattr(backend, "use_cap_field"):
            _VERIFIED.add(backend.endpoint)
        if usage.completion_tokens <= sent.max_output or backend.endpoint in self._warned:
            return
        self._warned.add(backend.endpoint)
        field_now = backend.capabilities.output_cap_param
        switch = getattr(backend, "use_cap_field", None)
        other = "max_tokens" if field_now == "max_completion_tokens" else \
            "max_completion_tokens"
        _log.warning(
            "llm.cap_ignored", endpoint=backend.endpoint, model=backend.model,
            cap_field=field_now, cap_sent=sent.max_output, completion=usage.completion_tokens,
            action=f"switched to {other}" if switch else "none (set cap_field for this endpoint)",
        )
        if switch is not None:
            switch(other)

    def _estimate(self, messages: Sequence[Message], text: str, model: str,
                  cap: int | None = None, backend: ChatBackend | None = None) -> Usage:
        usage = Usage(count_chat_tokens(messages, model), count_text_tokens(text, model),
                      None, None, "estimate")
        if backend is not None:  # scaled to what this endpoint bills (CALIBRATION)
            usage = CALIBRATION.estimate(_cal_key(backend), usage)
        if cap is not None and usage.completion_tokens > cap:
            # The server honoured the cap it was sent; tiktoken (another tokenizer) may count
            # more, which would commit more than was reserved.
            usage = replace(usage, completion_tokens=cap)
        return usage

    def _roomy_bound(self, role: str, messages: Sequence[Message], max_output: int,
                     backend: ChatBackend) -> int | None:
        """A bound on the prompt computed without BPE, when nothing caps this call's tokens;
        ``None`` when the prompt must be counted.

        A long prompt's tokenization is most of a call's CPU, and the server reports the
        usage that is committed. But a looser reservation held by one call can refuse or
        clamp a concurrent sibling under a capped budget (bench: one more best-of-4 run of the
        main job made no call), so the bound is used only when no token or dollar cap
        applies: the run's decisions are then exactly those an exact count would give.
        """
        budget = self.budget
        if budget is not None and (budget.caps_dollars or budget.remaining(role) is not None):
            return None
        raw = chat_tokens_bound(messages)
        if raw < _COUNT_BELOW:
            return None  # cheap to count exactly
        return CALIBRATION.prompt(_cal_key(backend), raw)

    def _bound(self, call: OpenCall, received: str = "",
               messages: Sequence[Message] | None = None) -> Usage:
        """What an attempt whose reply was lost may have cost: the prompt as counted (scaled
        by what the endpoint bills), and the whole cap that was sent (at least what did
        arrive)."""
        prompt = call.prompt_estimate
        if messages is not None:  # (the reservation may have held a looser bound)
            prompt = CALIBRATION.prompt((self.backend_for(call.role).endpoint, call.model),
                                        count_chat_tokens(messages, call.model))
        completion = max(call.max_output, count_text_tokens(received, call.model)
                         if received else 0)
        return Usage(prompt, completion, None, None, "bound")

    def _usage_when_cancelled(self, cancel: asyncio.CancelledError, call: OpenCall,
                              messages: Sequence[Message], sent: ChatRequest
                              ) -> tuple[Usage, str | None]:
        """What a cancelled attempt cost: nothing if its request never left; the reply's
        usage if it had finished; else (cancelled in flight) an upper bound."""
        outcome: asyncio.Future[ChatResponse] | None = getattr(cancel, _OUTCOME, None)
        billed = self.backend_for(call.role).capabilities.bills_lost_replies
        if outcome is None or outcome.cancelled():
            in_flight = outcome is not None or getattr(cancel, _IN_FLIGHT, False)
            return (self._bound(call, messages=messages) if in_flight and billed
                    else Usage.zero()), None
        failure = outcome.exception()
        if isinstance(failure, ModelError):
            return self._usage_of_failure(failure, call, messages, sent.model), failure.request_id
        if failure is not None:
            return Usage.zero(), None
        response = outcome.result()
        usage = response.usage or self._estimate(messages, response.text, sent.model,
                                                 cap=sent.max_output,
                                                 backend=self.backend_for(call.role))
        return usage, response.request_id

    def _usage_of_failure(self, exc: ModelError, call: OpenCall, messages: Sequence[Message],
                          model: str) -> Usage:
        if exc.usage is not None:
            return exc.usage
        if isinstance(exc, TransientModelError) and exc.billed:
            # A malformed, cut or timed-out reply: the server may have generated (and
            # billed) up to the cap. Never zero.
            return self._bound(call, exc.partial_text or "", messages)
        return Usage.zero()

    def _final_error(self, exc: ModelError, attempts: int) -> ModelError:
        if isinstance(exc, TransientModelError):
            return ModelError(
                f"gave up after {attempts} attempt(s): {exc}",
                status_code=exc.status_code, request_id=exc.request_id,
            )
        return exc


class _Probe:
    """An async context holding an endpoint's probe lock until it is verified."""

    def __init__(self, lock: asyncio.Lock | None, verified: set[str] | None = None,
                 endpoint: str = "") -> None:
        self._lock = lock
        self._verified = verified
        self._endpoint = endpoint
        self._held = False

    async def __aenter__(self) -> None:
        if self._lock is not None and self._verified is not None \
                and self._endpoint not in self._verified:
            await self._lock.acquire()
            self._held = True

    async def __aexit__(self, *exc: object) -> None:
        if self._held and self._lock is not None:
            self._lock.release()


_SEND_STEPS = 3
"""Event-loop steps a request gets to reach the wire before the next call may start its own."""
_OUTCOME = "stratagem_outcome"
"""Attribute of a CancelledError carrying the request's finished task, if it had finished."""
_IN_FLIGHT = "stratagem_in_flight"
"""Attribute of a CancelledError set when the request was on its way (it may be billed)."""


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
                setattr(cancel, _IN_FLIGHT, True)
                task.cancel()  # never leave a request running that nobody will record
                # (and if it ends with an error anyway, retrieve it: nothing else will)
                task.add_done_callback(_retrieve)
        raise


@dataclass(frozen=True, slots=True)
class _CallContext:
    backend: ChatBackend
    role: str
    node: str | None
    branch: str | None
    task_id: str | None
    labels: dict[str, str]
    rows: list[LedgerEntry] = field(default_factory=list)


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
        mean_logprob=response.mean_logprob,
    )


def _replayed(rec: Replayed, ctx: _CallContext) -> Completion:
    """The recorded completion (or failure) of a logical call, as the first execution got it."""
    if rec.error is not None:
        kind = {"TransientModelError": TransientModelError,
                "ContextLengthExceeded": ContextLengthExceeded,
                "OutputParseError": OutputParseError}.get(str(rec.error.get("type")), ModelError)
        raise kind(f"{rec.error.get('message', 'the call failed')} (replayed from the ledger)")
    last = rec.rows[-1]
    return Completion(
        text=rec.text,
        usage=last.usage,
        finish_reason=rec.finish_reason,
        model=rec.model or last.model,
        role=ctx.role,
        entry=last,
        attempts=rec.rows,
        replayed=True,
        mean_logprob=rec.mean_logprob,
    )
