"""Token (and dollar) budgets with atomic reservations and auditable transfers between roles.

A call first *reserves* its input estimate plus an output cap clamped to what remains, so
concurrent branches cannot overspend; then it *commits* the provider's real usage, or
*releases* the reservation. The only possible overshoot is the error of the input estimate,
which is measured (:attr:`Budget.overshoot_tokens`).
"""

from __future__ import annotations

import math
import threading
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stratagem.budgets._entries import LedgerEntry, Transfer, new_call_id
from stratagem.budgets._pricing import ModelPrice, Pricing
from stratagem.budgets._usage import Usage
from stratagem.errors import BudgetExceeded, ConfigError, PricingError

if TYPE_CHECKING:
    from stratagem.budgets._ledger import TokenLedger

__all__ = ["Budget", "Reservation"]

_TOTAL = "__total__"


@dataclass(frozen=True, slots=True)
class Reservation:
    """Budget held for one call until it is committed or released.

    Attributes:
        id: Unique id of the reservation.
        role: The role it was made for.
        input_tokens: The input estimate held.
        max_output: The output cap, clamped to what remained; send it as the call's cap.
        model: The model it was priced for (needed for dollar budgets).
        usd: Dollars held (0.0 when no dollar cap applies).
    """

    id: str
    role: str
    input_tokens: int
    max_output: int
    model: str | None = None
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        """Tokens held: input estimate plus output cap."""
        return self.input_tokens + self.max_output


@dataclass(slots=True)
class _Scope:
    limit: float | None  # None: no cap in this unit for this scope
    spent: float = 0.0
    reserved: float = 0.0

    @property
    def used(self) -> float:
        return self.spent + self.reserved

    @property
    def available(self) -> float:
        return math.inf if self.limit is None else self.limit - self.spent - self.reserved


@dataclass(slots=True)
class _Held:
    reservation: Reservation
    scopes: list[str] = field(default_factory=list)


class Budget:
    """A run's budget: a total and per-role caps in tokens, optionally in dollars.

    Roles without a cap are limited only by the total. Every method is atomic and safe to
    call from threads and asyncio tasks (it holds a lock and never awaits).

    Args:
        total: Token cap for the whole run (``None``: no total cap).
        roles: Token cap per role, e.g. ``{"planner": 500, "solver": 4000}``.
        total_usd: Dollar cap for the whole run.
        roles_usd: Dollar cap per role.
        pricing: Prices used for dollar caps and costs (built-in table by default). An
            :class:`~stratagem.budgets.Account` built on this budget uses the same table.
        min_output_tokens: The smallest output cap worth a call; a reservation that cannot
            grant this many output tokens is refused with :class:`BudgetExceeded`.
        ledger: Deprecated: record through an :class:`~stratagem.budgets.Account`, which
            records the transfers it makes. A budget given a ledger still records its own.
        run_id: Deprecated with ``ledger``.

    Raises:
        ConfigError: If a cap is negative or ``min_output_tokens`` is below 1.

    Example:
        >>> b = Budget(total=1000, roles={"solver": 600})
        >>> r = b.reserve("solver", input_estimate=100, max_output=2000)
        >>> r.max_output
        500
        >>> b.commit(r, Usage(prompt_tokens=98, completion_tokens=420))
        >>> b.remaining("solver")
        82
    """

    def __init__(
        self,
        total: int | None = None,
        roles: Mapping[str, int] | None = None,
        *,
        total_usd: float | None = None,
        roles_usd: Mapping[str, float] | None = None,
        pricing: Pricing | None = None,
        min_output_tokens: int = 16,
        ledger: TokenLedger | None = None,
        run_id: str = "",
    ) -> None:
        if min_output_tokens < 1:
            raise ConfigError(f"min_output_tokens must be >= 1, got {min_output_tokens}")
        _check_cap("total", total)
        _check_cap("total_usd", total_usd)
        for name, tokens in (roles or {}).items():
            _check_cap(f"roles.{name}", tokens)
        for name, dollars in (roles_usd or {}).items():
            _check_cap(f"roles_usd.{name}", dollars)
        self._lock = threading.Lock()
        self._tokens: dict[str, _Scope] = {_TOTAL: _Scope(total)}
        self._tokens.update({r: _Scope(c) for r, c in (roles or {}).items()})
        self._usd: dict[str, _Scope] = {_TOTAL: _Scope(total_usd)}
        self._usd.update({r: _Scope(c) for r, c in (roles_usd or {}).items()})
        self.pricing = pricing
        """The price table this budget was given (``None``: the built-in one)."""
        self._pricing = pricing if pricing is not None else Pricing.default()
        self._held: dict[str, _Held] = {}
        self.min_output_tokens = min_output_tokens
        if ledger is not None or run_id:
            warnings.warn(
                "Budget(ledger=..., run_id=...) is deprecated: a run's Account records its "
                "transfers (Account(ledger, budget, run_id=...).transfer(...))",
                DeprecationWarning, stacklevel=2,
            )
        self._ledger = ledger
        self._run_id = run_id
        self.overshoot_tokens = 0
        """Tokens committed beyond what was reserved (input-estimate error), summed."""

    # -- reservations ----------------------------------------------------------------------

    def reserve(
        self,
        role: str,
        input_estimate: int,
        max_output: int,
        *,
        model: str | None = None,
        pricing: Pricing | None = None,
    ) -> Reservation:
        """Hold budget for one call; the returned ``max_output`` is clamped to what remains.

        Args:
            role: The role making the call.
            input_estimate: Estimated prompt tokens (tiktoken or the model's tokenizer).
            max_output: The output cap the caller wants.
            model: The model to be called; required when a dollar cap applies.
            pricing: The price table for a dollar cap (this budget's by default).

        Raises:
            BudgetExceeded: If not even ``input_estimate + min_output_tokens`` fits in the
                run total or the role's cap (tokens or dollars).
            PricingError: If a dollar cap applies and ``model`` has no known price.
        """
        if input_estimate < 0 or max_output < 1:
            raise ValueError("input_estimate must be >= 0 and max_output >= 1")
        min_out = min(self.min_output_tokens, max_output)
        with self._lock:
            scopes = [_TOTAL] + ([role] if role in self._tokens else [])
            out = max_output
            for name in scopes:
                scope = self._tokens[name]
                avail = scope.available
                if input_estimate + min_out > avail:
                    raise BudgetExceeded(
                        kind="tokens",
                        role=None if name == _TOTAL else name,
                        limit=_num(scope.limit),
                        requested=input_estimate + min_out,
                        spent=_num(scope.used),
                    )
                if not math.isinf(avail):
                    out = min(out, int(avail - input_estimate))
            usd_scopes = [n for n in (_TOTAL, role) if n in self._usd and
                          self._usd[n].limit is not None]
            usd = 0.0
            if usd_scopes:
                price = self._price_for(model, pricing)
                for name in usd_scopes:
                    scope = self._usd[name]
                    need = _dollars(price, input_estimate, min_out)
                    if need > scope.available:
                        raise BudgetExceeded(
                            kind="usd",
                            role=None if name == _TOTAL else name,
                            limit=_num(scope.limit),
                            requested=need,
                            spent=scope.used,
                        )
                    if price.output > 0:
                        room = scope.available - _dollars(price, input_estimate, 0)
                        out = min(out, int(room * 1_000_000 / price.output))
                usd = _dollars(price, input_estimate, out)
            reservation = Reservation(
                id=uuid.uuid4().hex,
                role=role,
                input_tokens=input_estimate,
                max_output=out,
                model=model,
                usd=usd,
            )
            for name in scopes:
                self._tokens[name].reserved += reservation.tokens
            for name in usd_scopes:
                self._usd[name].reserved += usd
            self._held[reservation.id] = _Held(reservation, scopes + [f"usd:{n}" for n in
                                                                      usd_scopes])
            return reservation

    def commit(self, reservation: Reservation, usage: Usage, cost_usd: float | None = None) -> None:
        """Charge the real ``usage`` of a reserved call and free its reservation.

        Args:
            reservation: What :meth:`reserve` returned.
            usage: The provider's usage (or the flagged estimate).
            cost_usd: The call's cost, if already computed; otherwise priced here.

        Raises:
            ValueError: If the reservation was already committed or released.
        """
        with self._lock:
            held = self._pop(reservation)
            self._charge_locked(reservation.role, usage, reservation.model, cost_usd)
            self.overshoot_tokens += max(0, usage.total_tokens - reservation.tokens)
            self._unhold_locked(held)

    def release(self, reservation: Reservation) -> None:
        """Free a reservation whose call never reached the provider. Idempotent."""
        with self._lock:
            held = self._held.pop(reservation.id, None)
            if held is not None:
                self._unhold_locked(held)

    def charge(self, role: str, usage: Usage, *, model: str | None = None,
               cost_usd: float | None = None) -> None:
        """Charge usage that had no reservation (e.g. replayed from a ledger on resume)."""
        with self._lock:
            self._charge_locked(role, usage, model, cost_usd)

    # -- transfers -------------------------------------------------------------------------

    def transfer(
        self,
        from_role: str,
        to_role: str,
        tokens: int,
        reason: str,
        *,
        node: str = "",
        run_id: str | None = None,
        event_id: str | None = None,
    ) -> Transfer:
        """Move ``tokens`` of unspent cap from one role to another; returns the move.

        Both roles must have a token cap. The run total does not change. The move is not
        recorded here: :meth:`Account.transfer <stratagem.budgets.Account.transfer>` records
        it (a budget built with the deprecated ``ledger=`` records it there itself).

        Raises:
            ValueError: If ``tokens`` is not positive or the roles are the same.
            ConfigError: If either role has no cap to move.
            BudgetExceeded: If ``from_role`` has fewer than ``tokens`` unspent and unreserved.
        """
        if tokens <= 0:
            raise ValueError(f"a transfer moves a positive number of tokens, got {tokens}")
        if from_role == to_role:
            raise ValueError("a transfer needs two different roles")
        with self._lock:
            for role in (from_role, to_role):
                scope = self._tokens.get(role)
                if scope is None or scope.limit is None or role == _TOTAL:
                    raise ConfigError(
                        f"role {role!r} has no token cap, so budget cannot move to or from it; "
                        f"give it a cap in Budget(roles={{...}})"
                    )
            src, dst = self._tokens[from_role], self._tokens[to_role]
            if tokens > src.available:
                raise BudgetExceeded(
                    kind="tokens",
                    role=from_role,
                    limit=_num(src.limit),
                    requested=tokens,
                    spent=_num(src.used),
                )
            assert src.limit is not None and dst.limit is not None  # checked above
            src.limit -= tokens
            dst.limit += tokens
            event = Transfer(
                event_id=event_id or new_call_id(),
                run_id=self._run_id if run_id is None else run_id,
                from_role=from_role,
                to_role=to_role,
                tokens=tokens,
                reason=reason,
                node=node,
            )
        if self._ledger is not None:
            self._ledger.record_transfer(event)
        return event

    def apply(self, transfer: Transfer) -> None:
        """Re-apply a recorded move as it was made (it was checked then), e.g. on resume."""
        with self._lock:
            for role, delta in ((transfer.from_role, -transfer.tokens),
                                (transfer.to_role, transfer.tokens)):
                scope = self._tokens.setdefault(role, _Scope(0))
                scope.limit = (scope.limit or 0) + delta

    @property
    def ledger(self) -> TokenLedger | None:
        """Deprecated: the ledger given to the constructor, if any."""
        return self._ledger

    @property
    def run_id(self) -> str:
        """Deprecated: the run id given to the constructor."""
        return self._run_id

    # -- views -----------------------------------------------------------------------------

    @property
    def caps_dollars(self) -> bool:
        """Whether any dollar cap is set (then every reservation prices its estimate)."""
        with self._lock:
            return any(scope.limit is not None for scope in self._usd.values())

    def limit(self, role: str | None = None) -> int | None:
        """The token cap of ``role`` (or of the run total); ``None`` when uncapped."""
        with self._lock:
            scope = self._tokens.get(_TOTAL if role is None else role)
            return None if scope is None or scope.limit is None else int(scope.limit)

    def spent(self, role: str | None = None) -> int:
        """Committed tokens of ``role`` (or of the whole run)."""
        with self._lock:
            scope = self._tokens.get(_TOTAL if role is None else role)
            return 0 if scope is None else int(scope.spent)

    def reserved(self, role: str | None = None) -> int:
        """Tokens held by outstanding reservations of ``role`` (or of the whole run)."""
        with self._lock:
            scope = self._tokens.get(_TOTAL if role is None else role)
            return 0 if scope is None else int(scope.reserved)

    def remaining(self, role: str | None = None) -> int | None:
        """Tokens ``role`` can still reserve (the tighter of its cap and the run total);
        ``None`` when nothing caps it."""
        with self._lock:
            candidates = [self._tokens[_TOTAL].available]
            if role is not None and role in self._tokens:
                candidates.append(self._tokens[role].available)
            value = min(candidates)
            return None if math.isinf(value) else max(0, int(value))

    def unspent(self, role: str) -> int | None:
        """What ``role``'s own cap still allows (cap - spent - reserved); ``None`` if uncapped.

        Unlike :meth:`remaining`, the run total is not taken into account: this is what
        :meth:`transfer` may move.
        """
        with self._lock:
            scope = self._tokens.get(role)
            if scope is None or scope.limit is None:
                return None
            return max(0, int(scope.available))

    def restore(self, entries: Iterable[LedgerEntry], transfers: Iterable[Transfer]) -> None:
        """Re-apply a run's recorded spend and transfers, e.g. when resuming after a crash.

        Transfers are applied as recorded (they were checked when made); spend is charged
        without reservations. Call it on a fresh budget built with the run's original caps.
        """
        for t in transfers:
            self.apply(t)
        for e in entries:
            self.charge(e.role, e.usage, model=e.model, cost_usd=e.cost_usd)

    def spent_usd(self, role: str | None = None) -> float:
        """Committed dollars of ``role`` (or of the whole run), for priced models."""
        with self._lock:
            scope = self._usd.get(_TOTAL if role is None else role)
            return 0.0 if scope is None else scope.spent

    def roles(self) -> list[str]:
        """Roles with a cap or with spend so far."""
        with self._lock:
            return sorted(r for r in self._tokens if r != _TOTAL)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{scope: {limit, spent, reserved, remaining}}`` for the total and every role."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for name, scope in self._tokens.items():
                out["total" if name == _TOTAL else name] = {
                    "limit": None if scope.limit is None else int(scope.limit),
                    "spent": int(scope.spent),
                    "reserved": int(scope.reserved),
                    "remaining": None if scope.limit is None else int(scope.available),
                }
            return out

    # -- internals -------------------------------------------------------------------------

    def _price_for(self, model: str | None, pricing: Pricing | None = None) -> ModelPrice:
        table = pricing if pricing is not None else self._pricing
        price = None if model is None else table.price(model)
        if price is None:
            raise PricingError(
                f"a dollar cap is set but model {model!r} has no known price: add it to a "
                "price file (Pricing.from_toml) or set the budget in tokens"
            )
        return price

    def _pop(self, reservation: Reservation) -> _Held:
        held = self._held.pop(reservation.id, None)
        if held is None:
            raise ValueError(f"reservation {reservation.id} was already committed or released")
        return held

    def _unhold_locked(self, held: _Held) -> None:
        r = held.reservation
        for name in held.scopes:
            if name.startswith("usd:"):
                self._usd[name[4:]].reserved -= r.usd
            else:
                self._tokens[name].reserved -= r.tokens

    def _charge_locked(
        self, role: str, usage: Usage, model: str | None, cost_usd: float | None
    ) -> None:
        self._tokens[_TOTAL].spent += usage.total_tokens
        self._tokens.setdefault(role, _Scope(None)).spent += usage.total_tokens
        if cost_usd is None and model is not None:
            cost_usd = self._pricing.cost(model, usage)
        if cost_usd is not None:
            self._usd[_TOTAL].spent += cost_usd
            self._usd.setdefault(role, _Scope(None)).spent += cost_usd


def _check_cap(name: str, cap: float | None) -> None:
    if cap is not None and (isinstance(cap, bool) or cap < 0):
        raise ConfigError(f"budget {name} must be a non-negative number, got {cap!r}")


def _num(value: float | None) -> float:
    return math.inf if value is None else value


def _dollars(price: ModelPrice, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000
