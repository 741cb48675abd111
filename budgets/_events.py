"""What the ledger and the accounts tell their subscribers (and LangGraph's custom stream)."""

from __future__ import annotations

from dataclasses import dataclass

from stratagem.budgets._entries import LedgerEntry, Transfer

__all__ = ["AccountEvent", "BudgetThreshold", "CallRecorded", "TransferRecorded"]


@dataclass(frozen=True, slots=True)
class CallRecorded:
    """A ledger row was written (an attempt ended, or a call was observed)."""

    entry: LedgerEntry
    kind: str = "call"


@dataclass(frozen=True, slots=True)
class TransferRecorded:
    """Budget moved between roles."""

    transfer: Transfer
    kind: str = "transfer"


@dataclass(frozen=True, slots=True)
class BudgetThreshold:
    """A cap (the run total or a role's) reached ``fraction`` of its limit."""

    run_id: str
    role: str | None
    fraction: float
    spent: int
    limit: int
    kind: str = "budget"


AccountEvent = CallRecorded | TransferRecorded | BudgetThreshold
"""What an account tells its subscribers, in the order it happens."""
