"""Budget policies: how a batch's tokens are split between tasks, and how a run's budget
moves between roles on the judge's signal.

* :class:`Uniform`: every task gets the same share.
* :class:`DifficultyAdaptive`: harder tasks get more, with exactly the same total over the
  batch as uniform (a fair comparison at matched compute).
* :class:`JudgeFeedback`: when the judge is unsure, unspent planner/decomposer budget moves to
  the solver and more samples are granted; a verifier's acceptance stops the run early. Every
  move is a :class:`~stratagem.budgets.Transfer` in the ledger, with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from stratagem.budgets._entries import Transfer
from stratagem.errors import ConfigError

if TYPE_CHECKING:
    from stratagem.budgets._account import BudgetView

__all__ = [
    "AllocationPolicy",
    "DifficultyAdaptive",
    "FeedbackDecision",
    "JudgeFeedback",
    "ReallocationPolicy",
    "Uniform",
    "apportion",
]


def apportion(weights: Sequence[float], total: int) -> list[int]:
    """Split ``total`` tokens in proportion to ``weights``, in whole tokens summing to it
    exactly (largest remainder; ties go to the earlier item)."""
    if total < 0:
        raise ConfigError(f"a total budget must be >= 0, got {total}")
    if not weights:
        return []
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ConfigError("allocation weights must be finite non-negative numbers")
    # Only ratios matter: dividing by the largest weight keeps the sum (at most the number of
    # weights) and every ``w * total`` finite, however close to the float limit the weights are.
    top = max(weights)
    scaled = [w / top for w in weights] if top > 0 else [1.0] * len(weights)
    s = sum(scaled)
    exact = [w * total / s for w in scaled]
    shares = [math.floor(x) for x in exact]
    left = total - sum(shares)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


@runtime_checkable
class AllocationPolicy(Protocol):
    """Splits a batch's total budget between its tasks."""

    @property
    def name(self) -> str:
        """Short name for results and reports."""
        ...

    def allocate(self, difficulties: Sequence[float | None], total: int) -> list[int]:
        """Tokens per task (same order), summing to ``total``. ``None``: difficulty unknown."""
        ...


@dataclass(frozen=True, slots=True)
class Uniform:
    """Every task gets the same share of the total."""

    name: str = "uniform"

    def allocate(self, difficulties: Sequence[float | None], total: int) -> list[int]:
        """Equal shares, summing to ``total``."""
        return apportion([1.0] * len(difficulties), total)


@dataclass(frozen=True, slots=True)
class DifficultyAdaptive:
    """Shares grow with difficulty: ``weight = floor + difficulty ** exponent``.

    The total over the batch is exactly the same as :class:`Uniform`'s. Difficulty in
    [0, 1] comes from a label, the planner's estimate, or a cheap probe; an unknown one
    counts as the batch's mean known difficulty (0.5 if none is known).

    Attributes:
        floor: Weight every task gets regardless of difficulty (keeps easy tasks solvable).
        exponent: > 1 concentrates budget on the hardest tasks, < 1 spreads it.
        skip_above: Tasks harder than this get only ``skip_weight``: when a task is judged
            hopeless, tokens are better spent elsewhere (Snell et al. 2024). ``None``: off.
        skip_weight: The weight of a task above ``skip_above`` (default: ``floor``); 0
            gives it no tokens at all (unless every task is judged hopeless: then they
            share the total equally, since it must be spent).
    """

    floor: float = 0.25
    exponent: float = 1.0
    skip_above: float | None = None
    skip_weight: float | None = None
    name: str = "difficulty_adaptive"

    def __post_init__(self) -> None:
        if self.floor < 0 or self.exponent <= 0:
            raise ConfigError("difficulty_adaptive needs floor >= 0 and exponent > 0")
        if self.skip_weight is not None and self.skip_weight < 0:
            raise ConfigError("difficulty_adaptive needs skip_weight >= 0")

    def allocate(self, difficulties: Sequence[float | None], total: int) -> list[int]:
        """Shares proportional to ``floor + difficulty ** exponent``, summing to ``total``."""
        known = [d for d in difficulties if d is not None]
        fill = sum(known) / len(known) if known else 0.5
        weights, kept = [], []
        for d in difficulties:
            x = min(1.0, max(0.0, fill if d is None else d))
            skipped = self.skip_above is not None and x > self.skip_above
            kept.append(0.0 if skipped else 1.0)
            if skipped:
                weights.append(self.floor if self.skip_weight is None else self.skip_weight)
            else:
                weights.append(self.floor + x**self.exponent)
        if not any(weights):
            # Every weight 0 (floor 0 and only zero-difficulty or hopeless tasks): the tasks
            # not judged hopeless share the total; if every task is hopeless, all of them do.
            weights = kept
        return apportion(weights, total)


@dataclass(frozen=True, slots=True)
class FeedbackDecision:
    """What a reallocation policy decided after one verdict.

    Attributes:
        transfers: Budget moves made (already applied and recorded in the ledger).
        extra_samples: Further samples granted to the solver.
        stop: Stop now: the answer is good enough (e.g. a verifier accepted it).
        reason: Why, in words, for the run's record.
    """

    transfers: tuple[Transfer, ...] = ()
    extra_samples: int = 0
    stop: bool = False
    reason: str = ""


@runtime_checkable
class ReallocationPolicy(Protocol):
    """Moves budget mid-run in response to the judge."""

    @property
    def name(self) -> str:
        """Short name for results and reports."""
        ...

    def on_verdict(
        self, budget: BudgetView, *, score: float, accepted: bool, verified: bool, node: str
    ) -> FeedbackDecision:
        """React to one verdict (``verified``: it came from a programmatic checker)."""
        ...


@dataclass(frozen=True, slots=True)
class JudgeFeedback:
    """Below ``threshold`` judge confidence, move unspent budget to the solver and grant
    more samples; stop early when a verifier accepts.

    Attributes:
        threshold: Judge scores below this trigger a move.
        from_roles: Roles whose unspent budget may move.
        to_role: The role that receives it.
        fraction: Share of each source role's unspent budget moved per trigger.
        extra_samples: Samples granted per trigger.
        stop_on_verified: Stop as soon as a programmatic verifier accepts.
    """

    threshold: float = 0.5
    from_roles: tuple[str, ...] = field(default=("planner", "decomposer"))
    to_role: str = "solver"
    fraction: float = 1.0
    extra_samples: int = 2
    stop_on_verified: bool = True
    name: str = "judge_feedback"

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1 or not 0 < self.fraction <= 1:
            raise ConfigError("judge_feedback needs 0 <= threshold <= 1 and 0 < fraction <= 1")

    def on_verdict(
        self, budget: BudgetView, *, score: float, accepted: bool, verified: bool, node: str
    ) -> FeedbackDecision:
        """Apply the rule to one verdict; transfers go through ``budget.transfer`` (the run's
        :class:`~stratagem.budgets.Account`, which records them)."""
        if verified and accepted and self.stop_on_verified:
            return FeedbackDecision(stop=True, reason="verifier accepted the answer")
        if score >= self.threshold:
            return FeedbackDecision(reason=f"judge confidence {score:.2f} >= {self.threshold}")
        reason = f"judge confidence {score:.2f} < {self.threshold}"
        moves: list[Transfer] = []
        if budget.limit(self.to_role) is not None:
            for role in self.from_roles:
                unspent = budget.unspent(role)
                tokens = int((unspent or 0) * self.fraction)
                if tokens > 0:
                    moves.append(budget.transfer(role, self.to_role, tokens, reason, node=node))
        return FeedbackDecision(tuple(moves), self.extra_samples, False, reason)
