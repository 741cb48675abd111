"""Result types of the attribution analysis."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Attribution", "Interval", "RoleReturn", "TopologyComparison"]


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with a 95% bootstrap interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Attribution:
    """How much of the variance in success each group of variables explains.

    Attributes:
        r2: R² of the full model.
        shares: Group -> share of R² (LMG / Shapley values; they sum to 1), with intervals.
        r2_parts: Group -> absolute contribution to R² (share x R²), with intervals.
        n: Runs analysed.
        n_boot: Bootstrap resamples behind the intervals.
        groups: Group -> the columns (or derived terms) in it.
        method: ``"lmg"``.
        simulated: Whether the runs came from the simulated backend.
        skipped: Group -> why it got no share (a single level, or collinear with an earlier
            group, e.g. ``mode`` equal to the topology: its variance is in that group's share).
    """

    r2: Interval
    shares: dict[str, Interval]
    r2_parts: dict[str, Interval]
    n: int
    n_boot: int
    groups: dict[str, tuple[str, ...]]
    method: str = "lmg"
    simulated: bool = False
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopologyComparison:
    """Topologies compared at matched compute, one budget cell at a time.

    Attributes:
        budget: The cell's target tokens per task.
        rows: Per topology: ``accuracy`` (Interval), ``mean_tokens`` (achieved),
            ``target`` (the budget), ``n`` (runs), ``rank`` (1 = best).
    """

    budget: int
    rows: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoleReturn:
    """Marginal return of one role's tokens: accuracy per extra 1,000 tokens.

    Attributes:
        role: The role.
        per_1k: Slope of success on that role's tokens (in thousands), with its interval,
            holding the other roles' tokens and the topology fixed.
        mean_tokens: Mean tokens of that role per run.
    """

    role: str
    per_1k: Interval
    mean_tokens: float
