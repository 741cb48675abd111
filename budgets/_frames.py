"""Ledger rows as a pandas DataFrame (one row per call, labels as ``label:NAME`` columns)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from stratagem.budgets._entries import LedgerEntry

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["entries_frame"]

_COLUMNS = [c for c in LedgerEntry.model_fields if c != "labels"]


def entries_frame(entries: Iterable[LedgerEntry]) -> pd.DataFrame:
    """One row per call: every :class:`LedgerEntry` field, ``total_tokens``, and one
    ``label:NAME`` column per label (empty where a row lacks it). Unknown counts stay NA."""
    import pandas as pd  # noqa: PLC0415 - pandas is slow to import; only frames need it

    rows: list[dict[str, Any]] = []
    for e in entries:
        row = {c: getattr(e, c) for c in _COLUMNS}
        row["total_tokens"] = e.prompt_tokens + e.completion_tokens
        row.update({f"label:{k}": v for k, v in e.labels.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else [*_COLUMNS, "total_tokens"])
    for column in ("cached_tokens", "reasoning_tokens"):
        frame[column] = frame[column].astype("Int64")  # None means unknown, not zero
    return frame
