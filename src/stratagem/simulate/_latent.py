"""A run-level latent-skill model: planted ground truth for validating the attribution.

Each simulated run draws its achieved tokens around the cell's target, splits them between
roles the way its topology does, and succeeds with a probability that is a known function
of those tokens, the topology, the task's difficulty and (optionally) each role's tokens:

    eta = token_effect * log2(tokens_total / reference_tokens)
          + topology_effects[topology]
          + difficulty_effect * (difficulty - 0.5)
          + sum(role_effects[role] * tokens_<role> / 1000)

    linear link: p = clip(base + eta, 0.01, 0.99)      (effects are probability points)
    logit link:  p = expit(logit(base) + eta)          (effects are log-odds)

``base`` is therefore always a probability: that of a run of a topology with no effect
(absent from ``topology_effects``) that spends exactly ``reference_tokens`` on a task of
difficulty 0.5, with no role effect. Runs are independent given ``p``.

Rows are shaped like ``RunRecord`` (every field filled, ``simulated=True``, backend
``simulated``), so everything downstream of the ablation runner reads them unchanged and
can never mistake them for real runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem.errors import ConfigError
from stratagem.graphs import DEFAULT_SPLITS
from stratagem.records import BUILTIN_ROLES, RunRecord

__all__ = ["DEFAULT_WASTE_RATES", "LatentEffects", "latent_runs", "planted_shares"]

DEFAULT_WASTE_RATES: Mapping[str, float] = {
    "single": 0.03,
    "plan_solve": 0.05,
    "decompose_solve": 0.08,
    "best_of_n": 0.10,
    "refine": 0.06,
    "tree": 0.15,
    "adaptive": 0.08,
}
"""Mean share of billed tokens wasted (retries, parse failures, cancelled branches), per
topology; topologies not listed waste 5%."""

_SPLIT_CONCENTRATION = 40.0
"""Dirichlet concentration of a run's role split around its topology's (higher: tighter)."""
_WASTE_CONCENTRATION = 30.0
_ROLES = BUILTIN_ROLES
"""The roles with a token column."""
_P_MIN, _P_MAX = 0.01, 0.99
_FINISHED = datetime(2025, 1, 1, tzinfo=UTC)
_NUMERIC_ROWS = 200_000
"""Noise-free runs behind a numerically computed planted share (Monte Carlo error << 0.1pp)."""


@dataclass(frozen=True, slots=True)
class LatentEffects:
    """The planted truth: how success depends on tokens, topology, difficulty and roles.

    See the module docstring for the formula.

    Attributes:
        base: Success probability at ``reference_tokens`` for a topology with no effect, on
            a task of difficulty 0.5 (a probability under both links).
        token_effect: Change per doubling of ``tokens_total`` (probability points for the
            linear link, log-odds for the logit link).
        topology_effects: Topology -> its shift (same units); topologies not listed get 0.
        difficulty_effect: Shift per unit of difficulty above 0.5 (negative: harder tasks
            fail more often).
        noise: Log-normal sigma of achieved tokens around the target (the median run hits the
            target exactly; 0 makes every run spend its target).
        link: ``"linear"`` (clipped to [0.01, 0.99]; makes planted shares closed-form) or
            ``"logit"``.
        reference_tokens: Where ``base`` applies.
        role_effects: Role -> shift per 1,000 tokens of that role, on top of the total's.
    """

    base: float = 0.5
    token_effect: float = 0.1
    topology_effects: Mapping[str, float] = field(default_factory=dict)
    difficulty_effect: float = 0.0
    noise: float = 0.3
    link: Literal["linear", "logit"] = "linear"
    reference_tokens: float = 4000.0
    role_effects: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.base < 1.0:
            raise ConfigError(f"LatentEffects.base must be a probability in (0, 1), got "
                              f"{self.base}")
        if self.noise < 0:
            raise ConfigError(f"LatentEffects.noise must be >= 0, got {self.noise}")
        if self.link not in ("linear", "logit"):
            raise ConfigError(f"LatentEffects.link must be 'linear' or 'logit', got "
                              f"{self.link!r}")
        if self.reference_tokens <= 0:
            raise ConfigError("LatentEffects.reference_tokens must be > 0")
        unknown = set(self.role_effects) - set(_ROLES)
        if unknown:
            raise ConfigError(f"LatentEffects.role_effects: unknown roles {sorted(unknown)}; "
                              f"use {list(_ROLES)}")


def latent_runs(
    effects: LatentEffects,
    *,
    topologies: Sequence[str],
    budgets: Sequence[int],
    seeds: Sequence[int] = (0,),
    tasks_per_cell: int = 50,
    seed: int = 0,
    suite: str = "simulated",
    role_splits: Mapping[str, Mapping[str, float]] | None = None,
    waste_rates: Mapping[str, float] | None = None,
    include_latent: bool = False,
) -> pd.DataFrame:
    """Simulate one run per (topology, budget, seed, task): a full crossed sweep.

    Task ``j`` of ``tasks_per_cell`` has difficulty ``(j + 0.5) / tasks_per_cell`` (evenly
    spread over [0, 1]) in every cell, as in a real sweep that runs one task set through
    every cell. ``mode`` is the topology; ``roles_present`` follows its role split.

    Args:
        effects: The planted truth.
        topologies: Topology names.
        budgets: Target tokens per task (the matched-compute cells).
        seeds: Values of the ``seed`` column (replicates of each cell).
        tasks_per_cell: Tasks per cell.
        seed: Seeds the simulation; the same seed gives the same table.
        suite: The ``suite`` column.
        role_splits: Topology -> role -> share of tokens; defaults to the graphs' own
            ``DEFAULT_SPLITS`` (solver only for a topology not listed).
        waste_rates: Topology -> mean wasted share; defaults to :data:`DEFAULT_WASTE_RATES`.
        include_latent: Add a ``latent_p`` column with each run's success probability (not a
            ``RunRecord`` field; drop it before validating rows as records).

    Returns:
        One row per run; the columns are ``RunRecord``'s fields, in order.

    Raises:
        ConfigError: An empty grid, a budget below 1, or a role split with no positive share.
    """
    if not topologies or not budgets or not seeds or tasks_per_cell < 1:
        raise ConfigError("latent_runs() needs at least one topology, budget, seed and task")
    if min(budgets) < 1:
        raise ConfigError(f"latent_runs(): budgets must be >= 1 token, got {list(budgets)}")
    splits = DEFAULT_SPLITS if role_splits is None else role_splits
    wastes = DEFAULT_WASTE_RATES if waste_rates is None else waste_rates
    rng = np.random.default_rng(seed)

    shape = (len(topologies), len(budgets), len(seeds), tasks_per_cell)
    t_idx, b_idx, s_idx, j_idx = (a.ravel() for a in np.indices(shape))
    n = t_idx.size
    budget = np.asarray(budgets, dtype=np.float64)[b_idx]
    difficulty = (j_idx + 0.5) / tasks_per_cell

    total = np.maximum(1, np.rint(budget * np.exp(effects.noise * rng.standard_normal(n))))
    frac = np.array([_split(splits, t) for t in topologies])[t_idx]  # (n, roles)
    shape_k = np.where(frac > 0, frac * _SPLIT_CONCENTRATION, 1.0)
    draws = np.where(frac > 0, rng.gamma(shape_k), 0.0)
    share = draws / draws.sum(axis=1, keepdims=True)
    role_tokens = np.floor(total[:, None] * share)
    top = np.argmax(share, axis=1)
    role_tokens[np.arange(n), top] += total - role_tokens.sum(axis=1)

    eta = (effects.token_effect * np.log2(total / effects.reference_tokens)
           + np.array([effects.topology_effects.get(t, 0.0) for t in topologies])[t_idx]
           + effects.difficulty_effect * (difficulty - 0.5))
    for r, role in enumerate(_ROLES):
        eta += effects.role_effects.get(role, 0.0) * role_tokens[:, r] / 1000.0
    p = _probability(effects, eta)
    correct = rng.random(n) < p

    mean_waste = np.array([wastes.get(t, 0.05) for t in topologies])[t_idx]
    waste_share = rng.beta(mean_waste * _WASTE_CONCENTRATION,
                           (1 - mean_waste) * _WASTE_CONCENTRATION)
    waste = np.rint(total * waste_share)
    calls = np.sum(np.where(role_tokens > 0, np.maximum(1, np.rint(role_tokens / 800)), 0),
                   axis=1)

    topo = np.asarray(topologies, dtype=object)[t_idx]
    seed_col = np.asarray(seeds, dtype=np.int64)[s_idx]
    budget_int = np.asarray(budgets, dtype=np.int64)[b_idx]
    roles_present = ["+".join(r for r, f in zip(_ROLES, _split(splits, t), strict=True)
                              if f > 0) for t in topologies]
    tasks = [f"t{j:04d}" for j in range(tasks_per_cell)]
    total_int = total.astype(np.int64)
    prompt = np.rint(0.6 * total).astype(np.int64)
    columns: dict[str, object] = {
        "run_id": [f"sim{seed}-{topologies[t]}-{budgets[b]}-{seeds[s]}-{tasks[j]}"
                   for t, b, s, j in zip(t_idx, b_idx, s_idx, j_idx, strict=True)],
        "cell": [f"{topologies[t]}|{budgets[b]}|uniform" for t, b in zip(t_idx, b_idx,
                                                                           strict=True)],
        "suite": suite,
        "task_id": np.asarray(tasks, dtype=object)[j_idx],
        "difficulty": difficulty,
        "topology": topo,
        "topology_params": "{}",
        "budget": budget_int,
        "allocated": budget_int,
        "policy": "uniform",
        "seed": seed_col,
        "backend": "simulated",
        "model": "latent-skill",
        "simulated": True,
        "correct": correct,
        "score": None,
        "answer": "",
        "stop_reason": "simulated",
        "mode": topo,
        "roles_present": np.asarray(roles_present, dtype=object)[t_idx],
        "roles_called": np.asarray(roles_present, dtype=object)[t_idx],
        "candidates": "",
        "temperature": None,
        "no_call": False,
        "tokens_total": total_int,
        "prompt_tokens": prompt,
        "completion_tokens": total_int - prompt,
        "cached_tokens": None,
        "reasoning_tokens": None,
        **{f"tokens_{r}": role_tokens[:, i].astype(np.int64)
           for i, r in enumerate(_ROLES)},
        "accepted_tokens": (total - waste).astype(np.int64),
        "waste_tokens": waste.astype(np.int64),
        "calls": calls.astype(np.int64),
        "error_calls": 0,
        "refused_calls": 0,
        "failed_calls": 0,
        "transfers": 0,
        "cost_usd": None,
        "wall_s": total / 1500.0,
        "error": None,
        "finished_at": _FINISHED,
    }
    df = pd.DataFrame({name: columns[name] for name in RunRecord.model_fields
                       if name != "role_tokens"},
                      index=pd.RangeIndex(n))
    if include_latent:
        df["latent_p"] = p
    return df


def planted_shares(
    effects: LatentEffects,
    *,
    topologies: Sequence[str],
    budgets: Sequence[int],
    controls: bool = False,
    method: Literal["auto", "closed", "numeric"] = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """The true LMG shares that :func:`~stratagem.attribution.attribute` estimates.

    "Planted share" means: the LMG (Shapley) shares of R² in the population regression of
    the success *probability* ``p`` on the analysis's groups - ``spend`` (log2 tokens) and
    ``topology`` (plus ``controls``, i.e. difficulty, if ``controls``) - under the design
    of :func:`latent_runs` (topologies and budgets equally often, token noise from
    ``effects``, difficulty uniform on [0, 1]). The observed outcome is ``p`` plus Bernoulli
    noise that is uncorrelated with every function of the regressors, so the regression of
    success explains exactly the same variance in every subset of groups as the regression
    of ``p``: the shares are identical, though R² itself is lower.

    For the linear link with no role effects, ``p`` is additive in independent factors and
    each group's share is its term's variance over the sum (``method="closed"``):
    ``token_effect**2 * (Var(log2 budget) + (noise / ln 2)**2)`` for spend,
    ``Var(topology effect)`` for topology and ``difficulty_effect**2 / 12`` for controls.
    This ignores the clip to [0.01, 0.99] (choose effects that rarely reach it). Otherwise
    (``method="numeric"``) the shares are computed by LMG on 200,000 noise-free runs.

    Args:
        effects: The planted truth.
        topologies: The design's topologies.
        budgets: The design's budgets.
        controls: Whether the analysis puts ``difficulty`` among its controls.
        method: ``auto`` uses the closed form where it is exact (up to the clip).
        seed: Seeds the numeric computation.

    Returns:
        Group -> planted share (``spend``, ``topology``, and ``controls`` if asked).

    Raises:
        ConfigError: ``method="closed"`` where no closed form applies.
    """
    closed_ok = effects.link == "linear" and not any(effects.role_effects.values())
    if method == "closed" and not closed_ok:
        raise ConfigError("planted_shares(): the closed form needs the linear link and no "
                          "role effects; use method='numeric'")
    if method == "numeric" or not closed_ok:
        return _numeric_shares(effects, topologies, budgets, controls=controls, seed=seed)
    log_b = np.log2(np.asarray(budgets, dtype=np.float64))
    parts = {
        "spend": effects.token_effect**2 * (float(np.var(log_b))
                                            + (effects.noise / math.log(2)) ** 2),
        "topology": float(np.var([effects.topology_effects.get(t, 0.0) for t in topologies])),
    }
    if controls:
        parts["controls"] = effects.difficulty_effect**2 / 12.0
    total = sum(parts.values())
    if total == 0:
        raise ConfigError("planted_shares(): the planted effects explain no variance")
    return {g: v / total for g, v in parts.items() if v > 0}


def _numeric_shares(
    effects: LatentEffects,
    topologies: Sequence[str],
    budgets: Sequence[int],
    *,
    controls: bool,
    seed: int,
) -> dict[str, float]:
    # The estimator itself, on noise-free data; imported here so that the simulator does
    # not load the analysis (statsmodels) until a numeric planted share is asked for.
    from stratagem.attribution import attribute  # noqa: PLC0415

    tasks = max(1, _NUMERIC_ROWS // (len(topologies) * len(budgets)))
    df = latent_runs(effects, topologies=topologies, budgets=budgets, tasks_per_cell=tasks,
                     seed=seed, include_latent=True)
    result = attribute(df, outcome="latent_p", coordination=("topology",),
                       controls=("difficulty",) if controls else (), n_boot=0)
    return {g: s.estimate for g, s in result.shares.items()}


def _split(splits: Mapping[str, Mapping[str, float]], topology: str) -> list[float]:
    split = splits.get(topology, {"solver": 1.0})
    out = [float(split.get(r, 0.0)) for r in _ROLES]
    if sum(out) <= 0:
        raise ConfigError(f"latent_runs(): role split of {topology!r} has no positive share "
                          f"among {list(_ROLES)}")
    return out


def _probability(effects: LatentEffects, eta: np.ndarray) -> np.ndarray:
    if effects.link == "linear":
        return np.clip(effects.base + eta, _P_MIN, _P_MAX)
    logit = math.log(effects.base / (1 - effects.base))
    return 1.0 / (1.0 + np.exp(-(logit + eta)))
