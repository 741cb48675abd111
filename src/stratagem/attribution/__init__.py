"""Attribution: how much of the success is token spend, and how much coordination.

* :func:`attribute` - LMG (Shapley) shares of R² between spend and coordination variables,
  with bootstrap 95% intervals.
* :func:`compare_topologies` and :func:`matched_compute_ranking` - topologies at matched
  compute, one budget cell at a time.
* :func:`marginal_returns` - accuracy per extra 1,000 tokens given to each role.
* :func:`waste_by_topology` - billed minus accepted tokens, per topology.
* :class:`Claim` and :func:`claim_finding` - a research claim as a comparison of cells, and
  its finding (paired effect, 95% interval, verdict, the n that would decide it).

Every function takes the tidy run table (one row per run, the fields of
``stratagem.ablation``'s ``RunRecord`` as columns) as a pandas DataFrame.
"""

from __future__ import annotations

from stratagem.attribution._claims import Claim, Compare, Selector
from stratagem.attribution._compare import compare_topologies, matched_compute_ranking
from stratagem.attribution._findings import (
    Finding,
    PairedEffect,
    claim_finding,
    paired_effect,
    pairs_to_decide,
)
from stratagem.attribution._lmg import attribute, shapley
from stratagem.attribution._returns import marginal_returns
from stratagem.attribution._types import Attribution, Interval, RoleReturn, TopologyComparison
from stratagem.attribution._waste import waste_by_topology

__all__ = [
    "Attribution",
    "Claim",
    "Compare",
    "Finding",
    "Interval",
    "PairedEffect",
    "RoleReturn",
    "Selector",
    "TopologyComparison",
    "attribute",
    "claim_finding",
    "compare_topologies",
    "marginal_returns",
    "matched_compute_ranking",
    "paired_effect",
    "pairs_to_decide",
    "shapley",
    "waste_by_topology",
]
