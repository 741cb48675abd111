"""The account of a run: the one object that records model calls and enforces the budget.

Every attempt a run makes goes through an :class:`Account`::

    open_call (reserve)  ->  sending (write-ahead intent)  ->  close_call (price, commit,
    ledger row + intent closed in one transaction, events, ``llm.call`` log)

or :meth:`Account.record` for a call made elsewhere (an adapter that only observes). Budget
moves go through :meth:`Account.transfer`. Nothing else writes a row, so the ledger, the
budget and the run's totals cannot disagree.

An account also makes a run *replayable*: the outcome of each logical call (the reply, or the
final failure after retries) is stored under a key made of the LangGraph position that made it
(node, superstep, path) and its order there. When a run is executed again under the same run id
(a durable resume, or a rerun after a crash), a call whose outcome is recorded is not sent
again: its recorded reply is returned and its recorded rows are charged to the budget at the
point the original run charged them, so the rerun takes exactly the path the first execution
took and its rows are counted once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from langgraph.config import get_config, get_stream_writer

from stratagem._redact import redact
from stratagem._types import CallStatus
from stratagem.budgets._aggregate import UsageTotals
from stratagem.budgets._budget import Budget, Reservation
from stratagem.budgets._entries import LedgerEntry, Transfer, new_call_id
from stratagem.budgets._events import (
    AccountEvent,
    BudgetThreshold,
    CallRecorded,
    TransferRecorded,
)
from stratagem.budgets._ledger import TokenLedger
from stratagem.budgets._pricing import Pricing
from stratagem.budgets._usage import Usage
from stratagem.errors import ConfigError
from stratagem.logging import get_logger

__all__ = ["Account", "BudgetView", "OpenCall", "Replayed"]

_log = get_logger("stratagem.llm")

THRESHOLDS = (0.8, 1.0)
"""Fractions of a cap at which a :class:`BudgetThreshold` event is emitted."""


class BudgetView(Protocol):
    """What a reallocation policy may read and do: an :class:`Account` (which records the
    moves) or a bare :class:`Budget`."""

    def limit(self, role: str | None = None) -> int | None: ...
    def unspent(self, role: str) -> int | None: ...
    def remaining(self, role: str | None = None) -> int | None: ...
    def spent(self, role: str | None = None) -> int: ...
    def transfer(self, from_role: str, to_role: str, tokens: int, reason: str, *,
                 node: str = "") -> Transfer: ...


# -- calls ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OpenCall:
    """An attempt between :meth:`Account.open_call` and :meth:`Account.close_call`.

    Attributes:
        call_id: The id its ledger row will have.
        max_output: The output cap to send (clamped by the budget).
        prompt_estimate: The prompt counted with tiktoken (what a lost reply is charged).
    """

    call_id: str
    role: str
    model: str
    backend: str
    attempt: int
    node: str
    branch: str | None
    task_id: str | None
    labels: dict[str, str]
    max_output: int
    prompt_estimate: int
    reservation: Reservation | None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class Replayed:
    """A logical call whose outcome was recorded by an earlier execution of the run.

    Attributes:
        rows: Its attempts' ledger rows, in order (the last one answered, unless it failed).
        text: The reply text (``""`` for a failure).
        finish_reason: As the server reported it.
        model: The model that answered.
        error: ``{"type": ..., "message": ...}`` when the call failed after every retry.
        mean_logprob: The reply's mean token log-probability, if it was asked for and sent.
    """

    rows: tuple[LedgerEntry, ...]
    text: str
    finish_reason: str | None
    model: str | None
    error: dict[str, Any] | None
    mean_logprob: float | None = None


@dataclass
class _Run:
    """What an account and the views :meth:`Account.bind` makes of it share."""

    run_id: str
    thread_id: str
    labels: dict[str, str]
    budget: Budget | None
    listeners: list[Callable[[AccountEvent], None]]
    seq: dict[str, int] = field(default_factory=dict)
    replies: dict[str, dict[str, Any]] | None = None
    charged: set[str] = field(default_factory=set)
    applied: set[str] = field(default_factory=set)
    crossed: set[tuple[str | None, float]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Scope:
    node: str = ""
    branch: str | None = None
    task_id: str | None = None
    role: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def merged(self, *, node: str | None = None, branch: str | None = None,
               task_id: str | None = None, role: str | None = None,
               labels: Mapping[str, str] | None = None) -> _Scope:
        """This identity with what a call (or a narrower view) names itself."""
        return _Scope(
            node=self.node if node is None else node,
            branch=self.branch if branch is None else branch,
            task_id=self.task_id if task_id is None else task_id,
            role=self.role if role is None else role,
            labels={**self.labels, **(labels or {})},
        )


class Account:
    """The record and the purse of one run: ledger, budget, prices and the run's identity.

    It is the only way a row enters the ledger and the only way budget moves, so a
    ``ModelClient``, a LangChain callback or your own code record the same way. It can be
    used without any client: open a call, send it however you like, close it with the usage.

    Args:
        ledger: Where every attempt and transfer is recorded (in memory if omitted).
        budget: The run's caps; ``None`` for no limit.
        pricing: The one price table (the budget's, if it has one; else the built-in one).
        run_id: Stamped on every row and transfer.
        thread_id: The LangGraph thread of the run.
        labels: Stamped on every row (topology, task, seed, ...).

    Raises:
        ConfigError: If both the budget and ``pricing`` name a price table and they differ.

    Example:
        >>> from stratagem.budgets import Account, Budget, Usage
        >>> acct = Account(budget=Budget(total=1000), run_id="r1")
        >>> call = acct.open_call(role="solver", model="gpt-4o-mini", input_estimate=40,
        ...                       max_output=200)
        >>> row = acct.close_call(call, Usage(38, 120))
        >>> acct.totals().total_tokens, acct.remaining()
        (158, 842)
    """

    def __init__(
        self,
        ledger: TokenLedger | None = None,
        budget: Budget | None = None,
        *,
        pricing: Pricing | None = None,
        run_id: str = "",
        thread_id: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._ledger = ledger if ledger is not None else TokenLedger()
        self._pricing = _one_price_table(pricing, budget)
        self._run = _Run(run_id, thread_id or run_id, dict(labels or {}), budget, [])
        self._scope = _Scope()

    # -- identity --------------------------------------------------------------------------

    @property
    def ledger(self) -> TokenLedger:
        """The ledger every row goes to."""
        return self._ledger

    @property
    def budget(self) -> Budget | None:
        """The run's budget (``None``: no limit)."""
        return self._run.budget

    @property
    def pricing(self) -> Pricing:
        """The price table rows are costed with."""
        return self._pricing

    @property
    def run_id(self) -> str:
        """The run every row is stamped with."""
        return self._run.run_id

    @property
    def thread_id(self) -> str:
        """The LangGraph thread of the run."""
        return self._run.thread_id

    @property
    def labels(self) -> dict[str, str]:
        """Labels of the run, with those of this view's scope."""
        return {**self._run.labels, **self._scope.labels}

    def for_run(
        self,
        *,
        run_id: str,
        thread_id: str | None = None,
        budget: Budget | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Account:
        """An account for another run on the same ledger and prices (and subscribers):
        fresh per-run state; labels are added to this account's."""
        other = Account.__new__(Account)
        other._ledger = self._ledger
        other._pricing = (self._pricing if budget is None
                          else _one_price_table(self._pricing, budget, inherited=True))
        other._run = _Run(run_id, thread_id or run_id, {**self._run.labels, **(labels or {})},
                          budget, list(self._run.listeners))
        other._scope = _Scope()
        return other

    def bind(
        self,
        *,
        node: str | None = None,
        branch: str | None = None,
        task_id: str | None = None,
        role: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Account:
        """A view of this account whose calls default to this identity (the node and
        LangGraph task making them, a branch, a role). Same run, same budget."""
        other = Account.__new__(Account)
        other._ledger, other._pricing, other._run = self._ledger, self._pricing, self._run
        other._scope = self._scope.merged(node=node, branch=branch, task_id=task_id, role=role,
                                          labels=labels)
        return other

    @property
    def scope(self) -> dict[str, Any]:
        """The identity this view stamps on calls that do not name their own."""
        s = self._scope
        return {"node": s.node, "branch": s.branch, "task_id": s.task_id, "role": s.role}

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[AccountEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every event of this run (and of runs made from it with
        :meth:`for_run` afterwards); returns a function that unsubscribes it. Listeners run
        synchronously after the row is durable; an exception in one is logged, not raised."""
        self._run.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._run.listeners:
                self._run.listeners.remove(listener)

        return unsubscribe

    def _emit(self, event: AccountEvent) -> None:
        writer = _stream_writer()
        if writer is not None:
            writer(event)  # LangGraph's custom stream mode: astream() and users' own astream
        for listener in list(self._run.listeners):
            try:
                listener(event)
            except Exception as exc:  # a listener must not break the run
                _log.warning("account.listener_failed", error=f"{type(exc).__name__}: {exc}")

    def _thresholds(self, role: str) -> None:
        budget = self._run.budget
        if budget is None:
            return
        for scope in (None, role):
            limit = budget.limit(scope)
            if not limit:
                continue
            spent = budget.spent(scope)
            for fraction in THRESHOLDS:
                if spent >= fraction * limit and (scope, fraction) not in self._run.crossed:
                    self._run.crossed.add((scope, fraction))
                    self._emit(BudgetThreshold(self.run_id, scope, fraction, spent, limit))

    # -- the call lifecycle ----------------------------------------------------------------

    def open_call(
        self,
        *,
        role: str | None = None,
        model: str,
        input_estimate: int,
        max_output: int,
        backend: str = "openai",
        attempt: int = 1,
        prompt_estimate: int | None = None,
        node: str | None = None,
        branch: str | None = None,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        call_id: str | None = None,
    ) -> OpenCall:
        """Reserve budget for one attempt; send ``call.max_output`` as its output cap.

        Args:
            input_estimate: The prompt estimate reserved (with any safety margin).
            prompt_estimate: The prompt counted without margin (charged if the reply is
                lost); ``input_estimate`` if omitted.

        Raises:
            BudgetExceeded: If the budget cannot fit even a minimal call.
        """
        role = self._role(role)
        reservation = None
        cap = max_output
        budget = self._run.budget
        if budget is not None:
            reservation = budget.reserve(role, input_estimate, max_output, model=model,
                                         pricing=self._pricing)
            cap = reservation.max_output
        s = self._scope.merged(node=node, branch=branch, task_id=task_id, labels=labels)
        return OpenCall(
            call_id=call_id or new_call_id(),
            role=role,
            model=model,
            backend=backend,
            attempt=attempt,
            node=s.node,
            branch=s.branch,
            task_id=s.task_id,
            labels={**self._run.labels, **s.labels},
            max_output=cap,
            prompt_estimate=input_estimate if prompt_estimate is None else prompt_estimate,
            reservation=reservation,
        )

    def sending(self, call: OpenCall) -> None:
        """Write the call's intent just before its request leaves: if the process dies
        before :meth:`close_call`, the ledger still holds the attempt (status ``lost``,
        charged at its reservation) the next time it is opened.

        Raises:
            LedgerError: If the intent could not be written (then do not send).
        """
        self._ledger.open_intent(self._intent(call))

    async def asending(self, call: OpenCall) -> None:
        """:meth:`sending` for a call made in an event loop: the intents of calls leaving in
        the same step share one commit (:meth:`TokenLedger.aopen_intent`)."""
        await self._ledger.aopen_intent(self._intent(call))

    def _intent(self, call: OpenCall) -> LedgerEntry:
        bound = Usage(call.prompt_estimate, call.max_output, None, None, "bound")
        return self._entry(
            call, bound, status="lost", latency_s=0.0, cap=call.max_output,
            error="the process ended with this request in flight: outcome unknown, charged "
                  "at its reservation",
        )

    def release(self, call: OpenCall) -> None:
        """Give back the reservation of an attempt that never reached the server."""
        self._ledger.drop_intent(call.call_id)
        if call.reservation is not None and self._run.budget is not None:
            self._run.budget.release(call.reservation)

    def close_call(
        self,
        call: OpenCall,
        usage: Usage,
        *,
        status: CallStatus = "ok",
        error: str | None = None,
        request_id: str | None = None,
        outcome: tuple[str, dict[str, Any]] | None = None,
    ) -> LedgerEntry:
        """Charge an attempt's usage and record its row (closing its intent), then tell the
        subscribers and log ``llm.call``. ``outcome`` (a replay key and what to replay) is
        stored in the same transaction when this attempt ended its logical call.

        Raises:
            LedgerError: If the row could not be written durably.
        """
        return self._commit(call, usage, status=status, error=error, request_id=request_id,
                            latency_s=time.perf_counter() - call.t0, cap=call.max_output,
                            outcome=outcome)

    def _commit(self, call: OpenCall, usage: Usage, *, status: CallStatus, error: str | None,
                request_id: str | None, latency_s: float, cap: int | None,
                outcome: tuple[str, dict[str, Any]] | None = None) -> LedgerEntry:
        """Price, charge (against the reservation if there is one), write, announce."""
        entry = self._charged(call, usage, status=status, error=error, request_id=request_id,
                              latency_s=latency_s, cap=cap)
        self._ledger.complete(entry, outcome)
        self._run.charged.add(entry.call_id)
        self._after(entry)
        return entry

    async def aclose_call(
        self,
        call: OpenCall,
        usage: Usage,
        *,
        status: CallStatus = "ok",
        error: str | None = None,
        request_id: str | None = None,
        outcome: tuple[str, dict[str, Any]] | None = None,
    ) -> LedgerEntry:
        """:meth:`close_call` for a call made in an event loop: the rows of calls that end
        in the same step share one commit (:meth:`TokenLedger.acomplete`); each is durable
        before this returns. Cancelled while it waits, the row is still recorded and
        announced, then the cancellation is raised.

        Raises:
            LedgerError: If the row could not be written durably.
        """
        entry = self._charged(call, usage, status=status, error=error, request_id=request_id,
                              latency_s=time.perf_counter() - call.t0, cap=call.max_output)
        try:
            await self._ledger.acomplete(entry, outcome)
        except asyncio.CancelledError:
            self._run.charged.add(entry.call_id)
            self._after(entry)
            raise
        self._run.charged.add(entry.call_id)
        self._after(entry)
        return entry

    def _charged(self, call: OpenCall, usage: Usage, *, status: CallStatus, error: str | None,
                 request_id: str | None, latency_s: float, cap: int | None) -> LedgerEntry:
        """Price and charge an attempt (against its reservation if it has one); its row."""
        cost = self._pricing.cost(call.model, usage)
        budget = self._run.budget
        if budget is not None:
            if call.reservation is not None:
                budget.commit(call.reservation, usage, cost)
            else:
                budget.charge(call.role, usage, model=call.model, cost_usd=cost)
        return self._entry(call, usage, status=status, error=error, request_id=request_id,
                           latency_s=latency_s, cost=cost, cap=cap)

    def record(
        self,
        usage: Usage,
        *,
        model: str,
        role: str | None = None,
        backend: str = "openai",
        status: CallStatus = "ok",
        error: str | None = None,
        request_id: str | None = None,
        latency_s: float = 0.0,
        started_at: datetime | None = None,
        node: str | None = None,
        branch: str | None = None,
        task_id: str | None = None,
        attempt: int = 1,
        labels: Mapping[str, str] | None = None,
        call_id: str | None = None,
    ) -> LedgerEntry:
        """Record a call made without a reservation (an adapter that observes calls it did
        not make): priced, charged to the budget, written, announced. Recording the same
        ``call_id`` twice counts once.

        Raises:
            LedgerError: If the row could not be written durably.
        """
        role = self._role(role)
        cid = call_id or new_call_id()
        if cid in self._ledger:
            existing = self._ledger.get(cid)
            assert existing is not None
            return existing
        s = self._scope.merged(node=node, branch=branch, task_id=task_id, labels=labels)
        call = OpenCall(
            call_id=cid, role=role, model=model, backend=backend, attempt=attempt,
            node=s.node, branch=s.branch, task_id=s.task_id,
            labels={**self._run.labels, **s.labels}, max_output=0,
            prompt_estimate=usage.prompt_tokens, reservation=None,
            started=started_at or datetime.now(UTC),
        )
        return self._commit(call, usage, status=status, error=error, request_id=request_id,
                            latency_s=latency_s, cap=None)

    def _role(self, role: str | None) -> str:
        role = role or self._scope.role
        if not role:
            raise ConfigError("a call needs a role: pass role=... or bind(role=...) first")
        return role

    def _entry(self, call: OpenCall, usage: Usage, *, status: CallStatus, latency_s: float,
               cap: int | None, error: str | None = None, request_id: str | None = None,
               cost: float | None = None) -> LedgerEntry:
        return LedgerEntry(
            call_id=call.call_id,
            run_id=self.run_id,
            thread_id=self.thread_id,
            task_id=call.task_id,
            attempt=call.attempt,
            role=call.role,
            node=call.node,
            branch=call.branch,
            model=call.model,
            backend=call.backend,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=self._pricing.cost(call.model, usage) if cost is None else cost,
            latency_s=latency_s,
            usage_source=usage.source,
            status=status,
            error=error,
            request_id=request_id,
            started_at=call.started,
            labels=call.labels,
            cap_sent=cap,
        )

    def _after(self, entry: LedgerEntry) -> None:
        if _log.is_enabled_for(logging.INFO):  # (the event is built only to be written)
            _log.info(
                "llm.call",
                **entry.model_dump(mode="json", exclude={"labels", "started_at"}),
                **{f"label_{k}": v for k, v in entry.labels.items()},
            )
        self._emit(CallRecorded(entry))
        self._thresholds(entry.role)

    # -- replay ----------------------------------------------------------------------------

    def replay_key(self, kind: str) -> str | None:
        """The key of the next logical call (or transfer) of ``kind`` made from the running
        LangGraph node: its namespace without task ids, superstep, path, and its order
        there. ``None`` outside a graph (such calls are not replayed)."""
        position = _graph_position()
        if position is None:
            return None
        base = f"{position}|{kind}"
        n = self._run.seq.get(base, 0)
        self._run.seq[base] = n + 1
        return f"{base}#{n}"

    def recall(self, key: str | None) -> Replayed | None:
        """The recorded outcome of the logical call ``key``, if an earlier execution of this
        run recorded one: its rows are charged to the budget now (once), as they were then."""
        if key is None:
            return None
        outcome = self._replies().get(key)
        if outcome is None or "call_ids" not in outcome:
            return None
        rows = tuple(r for r in (self._ledger.get(c) for c in outcome["call_ids"])
                     if r is not None)
        if len(rows) != len(outcome["call_ids"]):
            return None  # a row is missing (another ledger file): ask again
        self._charge_recorded(rows)
        return Replayed(rows, str(outcome.get("text", "")), outcome.get("finish_reason"),
                        outcome.get("model"), outcome.get("error"),
                        outcome.get("mean_logprob"))

    def remember_failure(self, key: str | None, call_ids: Iterable[str],
                         error: BaseException) -> None:
        """Record that the logical call ``key`` failed after every retry, so that a rerun
        fails the same way instead of asking again."""
        if key is None:
            return
        self._ledger.record_reply(self.run_id, key, {
            "call_ids": list(call_ids), **_position_fields(),
            "error": {"type": type(error).__name__, "message": redact(str(error))},
        })

    @staticmethod
    def outcome(key: str | None, call_ids: Iterable[str], *, text: str,
                finish_reason: str | None, model: str | None,
                mean_logprob: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """What :meth:`close_call` stores for a logical call that got its reply."""
        if key is None:
            return None
        # Stored redacted like every other output: a reply that echoed a secret replays
        # with the secret masked.
        stored = {"call_ids": list(call_ids), "text": redact(text),
                  "finish_reason": finish_reason, "model": model, **_position_fields()}
        if mean_logprob is not None:  # (a probe's signal: the same bin on a resume)
            stored["mean_logprob"] = mean_logprob
        return key, stored

    def _replies(self) -> dict[str, dict[str, Any]]:
        if self._run.replies is None:
            self._run.replies = self._ledger.replies(self.run_id)
        return self._run.replies

    def _charge_recorded(self, rows: Iterable[LedgerEntry]) -> None:
        budget = self._run.budget
        for row in rows:
            if row.call_id in self._run.charged or row.status == "lost":
                continue
            self._run.charged.add(row.call_id)
            if budget is not None:
                budget.charge(row.role, row.usage, model=row.model, cost_usd=row.cost_usd)

    def restore(self, replays: Callable[[dict[str, Any]], bool] = lambda outcome: True) -> None:
        """Charge the budget with what this run already spent that will not be replayed.

        Call it once, before executing the run again. ``replays(outcome)`` says whether
        the logical call (or transfer) with that recorded outcome will run again (its node
        re-executes) and so be charged when it is replayed: a durable resume replays only
        the unfinished tasks; a rerun from the start replays everything. Rows of this run
        that belong to no recorded outcome (attempts of a call the crash interrupted) are
        charged now; ``lost`` rows never are (they count in the ledger's billed total, not
        in the run's budget).
        """
        replies = self._replies()
        replayed_ids = {cid for o in replies.values() if replays(o)
                        for cid in o.get("call_ids", ())}
        self._charge_recorded(e for e in self._ledger.entries(run_id=self.run_id)
                              if e.call_id not in replayed_ids)
        replayed_moves = {o["event_id"] for o in replies.values()
                          if "event_id" in o and replays(o)}
        budget = self._run.budget
        for t in self._ledger.transfers(self.run_id):
            if t.event_id not in replayed_moves and t.event_id not in self._run.applied:
                self._run.applied.add(t.event_id)
                if budget is not None:
                    budget.apply(t)

    # -- transfers -------------------------------------------------------------------------

    def transfer(self, from_role: str, to_role: str, tokens: int, reason: str, *,
                 node: str = "") -> Transfer:
        """Move ``tokens`` of unspent cap from one role to another and record the move.

        In a replayed run, a move the first execution recorded at the same place is applied
        again to the budget but not recorded twice.

        Raises:
            ConfigError: If there is no budget, or a role has no cap to move.
            BudgetExceeded: If ``from_role`` has fewer than ``tokens`` unspent.
            LedgerError: If the move could not be recorded durably.
        """
        budget = self._run.budget
        if budget is None:
            raise ConfigError("this account has no budget, so there is nothing to move: "
                              "give the run a Budget")
        key = self.replay_key("transfer")
        event_id = None
        if key is not None:
            event_id = hashlib.sha256(f"{self.run_id}\0{key}".encode()).hexdigest()[:32]
            if event_id in self._run.applied:
                recorded = next(t for t in self._ledger.transfers(self.run_id)
                                if t.event_id == event_id)
                return recorded
        event = budget.transfer(from_role, to_role, tokens, reason, node=node or self._scope.node,
                                run_id=self.run_id, event_id=event_id)
        if event_id is not None:
            self._run.applied.add(event_id)
        if self._ledger.record_transfer(event) and key is not None:
            self._ledger.record_reply(self.run_id, f"{key}", {"event_id": event.event_id,
                                                             **_position_fields()})
        self._emit(TransferRecorded(event))
        return event

    # -- views (what a policy reads) -------------------------------------------------------

    def limit(self, role: str | None = None) -> int | None:
        """The token cap of ``role`` (or of the run); ``None`` when uncapped or no budget."""
        return None if self.budget is None else self.budget.limit(role)

    def unspent(self, role: str) -> int | None:
        """What ``role``'s own cap still allows; ``None`` if uncapped or no budget."""
        return None if self.budget is None else self.budget.unspent(role)

    def remaining(self, role: str | None = None) -> int | None:
        """Tokens ``role`` can still reserve; ``None`` when nothing caps it."""
        return None if self.budget is None else self.budget.remaining(role)

    def spent(self, role: str | None = None) -> int:
        """Tokens charged to ``role`` (or to the run) so far in this execution."""
        return 0 if self.budget is None else self.budget.spent(role)

    def entries(self) -> list[LedgerEntry]:
        """This run's rows, in order (``lost`` ones included)."""
        return self._ledger.entries(run_id=self.run_id)

    def totals(self) -> UsageTotals:
        """Sums over this run's rows, without ``lost`` ones (one execution's spend)."""
        return self._ledger.totals(run_id=self.run_id, status=["ok", "error", "cancelled"])

    def by_role(self) -> dict[Any, UsageTotals]:
        """Sums per role over this run's rows, without ``lost`` ones."""
        return self._ledger.group_by("role", run_id=self.run_id,
                                     status=["ok", "error", "cancelled"])

    def transfers(self) -> list[Transfer]:
        """This run's budget moves, in order."""
        return self._ledger.transfers(self.run_id)

    def __repr__(self) -> str:
        return f"Account(run_id={self.run_id!r}, budget={self.budget!r})"


def _one_price_table(pricing: Pricing | None, budget: Budget | None, *,
                     inherited: bool = False) -> Pricing:
    own = None if budget is None else budget.pricing
    if pricing is not None and own is not None and own is not pricing and not inherited:
        raise ConfigError(
            "the budget and the account were given different price tables: pass one "
            "Pricing (to the budget or to the account/client), not two"
        )
    return own or pricing or Pricing.default()


def _stream_writer() -> Callable[[Any], None] | None:
    """The running node's custom-stream writer (a no-op unless the graph is streamed with
    ``custom`` mode), or ``None`` outside a graph."""
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # outside a graph; or a runnable config without a
        return None                   # LangGraph runtime (a chat model called by a node)


def _graph_position() -> str | None:
    md = _metadata()
    if md is None or md.get("langgraph_step") is None:
        return None
    ns = "|".join(part.split(":")[0] for part in str(md.get("langgraph_checkpoint_ns", ""))
                  .split("|"))
    path = ",".join(str(p) for p in md.get("langgraph_path") or ())
    return f"{ns}@{md['langgraph_step']}@{path}"


def _position_fields() -> dict[str, Any]:
    md = _metadata() or {}
    ns = str(md.get("langgraph_checkpoint_ns", ""))
    return {"step": md.get("langgraph_step"),
            "task_id": ns.rpartition(":")[2] if ":" in ns else None}


def _metadata() -> Mapping[str, Any] | None:
    try:
        config = get_config()
    except (RuntimeError, KeyError):
        return None
    md = config.get("metadata")
    return md if isinstance(md, Mapping) else None
