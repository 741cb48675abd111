"""Every error stratagem raises, split by who is to blame.

::

    StratagemError
    ├── ConfigError               the user's mistake: the message names the field and the fix
    │   ├── PricingError          a price table that is malformed, or a dollar cap without a price
    │   ├── LedgerFormatError     a file that is not a stratagem ledger, or from a newer version
    │   └── TokenizerUnavailable  a tiktoken encoding that cannot be loaded offline
    └── RunError                  something went wrong while a run was under way
        ├── BudgetExceeded        not even a minimal call fits in what remains
        ├── LedgerError           the ledger could not record a row (disk full, closed store, ...)
        └── ModelError            the model endpoint failed after the retries it was allowed
            ├── TransientModelError     a failure worth retrying (429, 5xx, timeout, dropped
            │                           connection, malformed response); raised by backends
            ├── ContextLengthExceeded   the prompt does not fit the model's context window
            └── OutputParseError        structured output did not parse, even after a repair

A :class:`ConfigError` never shows a traceback at the command line: the CLI prints its message
on one line and exits with code 2. A :class:`RunError` exits with code 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from stratagem.budgets import Usage

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "ContextLengthExceeded",
    "LedgerError",
    "LedgerFormatError",
    "ModelError",
    "OutputParseError",
    "PricingError",
    "RunError",
    "StratagemError",
    "TokenizerUnavailable",
    "TransientModelError",
]

BudgetKind = Literal["tokens", "usd"]


class StratagemError(Exception):
    """Base class of every error raised by stratagem."""


class ConfigError(StratagemError):
    """The user's input is wrong: a config field, a CLI argument, a file.

    The message names what is wrong and how to fix it.
    """


class PricingError(ConfigError):
    """A price table is malformed, or a dollar budget needs a price that is not known."""


class LedgerFormatError(ConfigError):
    """A file opened as a ledger is not one, or was written by a newer stratagem."""


class TokenizerUnavailable(ConfigError):
    """A tiktoken encoding cannot be loaded without the network."""


class RunError(StratagemError):
    """A run failed for a reason other than the user's input."""


class LedgerError(RunError):
    """The ledger could not durably record a row."""


class BudgetExceeded(RunError):
    """A reservation did not fit: not even a minimal call is possible within the limit.

    Attributes:
        kind: ``"tokens"`` or ``"usd"``: which limit was hit.
        role: The role whose cap was hit, or ``None`` for the run total.
        limit: The cap in force (tokens or dollars).
        requested: What the refused reservation needed at minimum.
        spent: Committed plus outstanding reservations in that scope when it was refused.
        scope: ``None`` for a cap of the budget; ``"allowance"`` when the call's own
            allowance (a parallel branch's share) was too small for its prompt.
    """

    def __init__(
        self,
        *,
        kind: BudgetKind,
        role: str | None,
        limit: float,
        requested: float,
        spent: float,
        scope: str | None = None,
    ) -> None:
        self.kind: BudgetKind = kind
        self.role = role
        self.limit = limit
        self.requested = requested
        self.spent = spent
        self.scope = scope
        unit = "tokens" if kind == "tokens" else "USD"
        if scope == "allowance":
            message = (
                f"budget exceeded for role {role!r}: this call's allowance of {_fmt(limit)} "
                f"{unit} (its branch's share) cannot fit its prompt and a minimal reply "
                f"({_fmt(requested)} {unit})"
            )
        else:
            where = f"role {role!r}" if role is not None else "the run total"
            message = (f"budget exceeded for {where}: needs {_fmt(requested)} {unit}, "
                       f"{_fmt(spent)} of {_fmt(limit)} {unit} already spent or reserved")
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only __init__ breaks the default pickling that Ray and multiprocessing use.
        return (_rebuild_budget_exceeded, (self.kind, self.role, self.limit, self.requested,
                                           self.spent, self.scope))


def _rebuild_budget_exceeded(
    kind: BudgetKind, role: str | None, limit: float, requested: float, spent: float,
    scope: str | None = None,
) -> BudgetExceeded:
    return BudgetExceeded(kind=kind, role=role, limit=limit, requested=requested, spent=spent,
                          scope=scope)


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class ModelError(RunError):
    """A model endpoint failed after the retries it was allowed, or refused the request.

    Attributes:
        status_code: The HTTP status, when there was one.
        request_id: The provider's request id, when it sent one.
        usage: Token usage the failed attempt reported (charged in the ledger), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.usage = usage


class TransientModelError(ModelError):
    """A failure that may succeed on retry: 429, 5xx, timeout, dropped connection, a
    malformed or truncated response.

    Attributes:
        retry_after: Seconds the server asked us to wait (``Retry-After``), if it said.
        partial_text: For a stream cut short, the text that did arrive (its tokens were
            generated, so they are estimated and charged).
        billed: The server took the request and may have generated (and billed) its reply,
            which was then lost: a malformed or cut reply, a read timeout. Such an attempt
            is charged at an upper bound (``usage_source="bound"``), never at zero.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        usage: Usage | None = None,
        partial_text: str | None = None,
        billed: bool = False,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id, usage=usage)
        self.retry_after = retry_after
        self.partial_text = partial_text
        self.billed = billed or partial_text is not None


class ContextLengthExceeded(ModelError):
    """The prompt does not fit the model's context window; retrying cannot help."""


class OutputParseError(ModelError):
    """A structured output did not parse into its schema, even after one repair attempt.

    Attributes:
        completions: The completions that failed to parse (their tokens stay charged; they
            are waste in the ledger's accepted view).
    """

    completions: tuple[Any, ...] = ()
