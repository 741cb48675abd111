"""JSONL and CSV export of ledger rows and transfers (secrets redacted on the way out)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stratagem._redact import redact_value
from stratagem.budgets._entries import LedgerEntry, Transfer

__all__ = ["ENTRY_COLUMNS", "TRANSFER_COLUMNS", "export_csv", "export_jsonl"]

ENTRY_COLUMNS = tuple(LedgerEntry.model_fields)
TRANSFER_COLUMNS = tuple(Transfer.model_fields)


def _row(model: LedgerEntry | Transfer) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    cleaned: dict[str, Any] = redact_value(data)
    return cleaned


def export_jsonl(
    path: str | Path, entries: Iterable[LedgerEntry], transfers: Iterable[Transfer] = ()
) -> int:
    """Write one JSON object per line: ``{"type": "call", ...}`` or ``{"type": "transfer", ...}``.

    Returns:
        The number of lines written.
    """
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps({"type": "call", **_row(e)}, ensure_ascii=False) + "\n")
            n += 1
        for t in transfers:
            f.write(json.dumps({"type": "transfer", **_row(t)}, ensure_ascii=False) + "\n")
            n += 1
    return n


def export_csv(
    path: str | Path, entries: Iterable[LedgerEntry], transfers: Iterable[Transfer] = ()
) -> int:
    """Write call rows to ``path`` as CSV, labels flattened to ``label:NAME`` columns.

    Transfers, if any, go to ``<stem>.transfers.csv`` beside it. Unknown values are empty cells.

    Returns:
        The number of call rows written.
    """
    path = Path(path)
    rows = [_row(e) for e in entries]
    label_names = sorted({k for r in rows for k in r["labels"]})
    columns = [c for c in ENTRY_COLUMNS if c != "labels"] + [f"label:{n}" for n in label_names]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            labels = r.pop("labels")
            writer.writerow({**r, **{f"label:{k}": v for k, v in labels.items()}})
    transfer_rows = [_row(t) for t in transfers]
    if transfer_rows:
        with path.with_suffix(".transfers.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(TRANSFER_COLUMNS))
            writer.writeheader()
            writer.writerows(transfer_rows)
    return len(rows)
