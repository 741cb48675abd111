"""Waste per topology: billed tokens whose output the run never used."""

from __future__ import annotations

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem.attribution._design import require_table

__all__ = ["waste_by_topology"]


def waste_by_topology(df: pd.DataFrame) -> pd.DataFrame:
    """Billed, accepted and wasted tokens per topology.

    Waste is ``waste_tokens`` as the ledger recorded it (billed minus accepted: failed
    parses, retries, cancelled sibling branches). ``waste_share`` is the topology's total
    waste over its total billed tokens, so large runs weigh more than small ones.

    Args:
        df: Run records with ``topology``, ``tokens_total``, ``accepted_tokens`` and
            ``waste_tokens``.

    Returns:
        One row per topology (sorted by name) with columns ``topology``, ``n``,
        ``mean_billed``, ``mean_accepted``, ``mean_waste`` and ``waste_share``.

    Raises:
        ConfigError: An empty table or a missing column.
    """
    require_table(df, ["topology", "tokens_total", "accepted_tokens", "waste_tokens"],
                  what="waste_by_topology()")
    grouped = df.groupby("topology", sort=True)
    out = grouped.agg(
        n=("tokens_total", "size"),
        mean_billed=("tokens_total", "mean"),
        mean_accepted=("accepted_tokens", "mean"),
        mean_waste=("waste_tokens", "mean"),
        billed=("tokens_total", "sum"),
        waste=("waste_tokens", "sum"),
    )
    billed = out["billed"].astype(float)
    out["waste_share"] = (out["waste"].astype(float) / billed.where(billed > 0)).fillna(0.0)
    out = out.drop(columns=["billed", "waste"]).reset_index()
    out["topology"] = out["topology"].astype(str)
    return out[["topology", "n", "mean_billed", "mean_accepted", "mean_waste", "waste_share"]]
