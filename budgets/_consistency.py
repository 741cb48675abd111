"""Adaptive-Consistency: sample until the leading answer is very probably the majority.

Self-consistency draws a fixed number of samples and takes the majority answer. Aggarwal et
al. 2023 ("Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding
with LLMs") stop as soon as the posterior probability that the current leader is the true
majority answer passes a threshold: up to 7.9x fewer samples at about the same accuracy. It
needs no verifier, so it is the early stop for tasks that have none.

Two criteria, as in the paper:

* ``beta`` (the paper's default): with ``v1 >= v2`` the votes of the two leading answers,
  the leader's share between the two is ``Beta(v1 + 1, v2 + 1)`` under a uniform prior;
  stop when ``P(share > 1/2) = 1 - I_{1/2}(v1 + 1, v2 + 1) >= threshold``.
* ``dirichlet``: the answer distribution is ``Dirichlet(v + 1)`` over the answers seen plus
  one for "an answer not seen yet"; stop when the probability that the leader has the
  largest share passes the threshold (a seeded Monte Carlo estimate, so the same votes
  always give the same decision).

A sample with no readable answer is no vote. :class:`AdaptiveConsistency` is also an
allocation policy (a uniform split: the rule saves tokens inside each run, never by moving
them between tasks), so ``[grid] policies`` can name it; the ablation runner then runs the
grid's voting topologies (``best_of_n`` with ``select = "vote"``) under the rule, with their
``n`` as the cap on samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import betainc

from stratagem.budgets._policies import apportion
from stratagem.errors import ConfigError

__all__ = ["AdaptiveConsistency", "ConsistencyDecision", "majority_probability"]

Criterion = Literal["beta", "dirichlet"]
_DRAWS = 4096
"""Monte Carlo draws of the Dirichlet criterion."""


def majority_probability(votes: Sequence[int], criterion: Criterion = "beta") -> float:
    """The posterior probability that the answer with the most votes is the majority.

    Args:
        votes: Votes per distinct answer, in any order (zeros are ignored).
        criterion: ``beta`` (the two leaders) or ``dirichlet`` (all answers, plus one
            unseen).

    Returns:
        A probability in [0, 1]; 0 when there is no vote.

    Example:
        >>> round(majority_probability([3]), 3)      # 3 of 3 agree: Beta(4, 1) above 1/2
        0.938
        >>> round(majority_probability([4]), 3)
        0.969
        >>> majority_probability([2, 2])             # a tie
        0.5
    """
    counts = sorted((int(v) for v in votes if v > 0), reverse=True)
    if not counts:
        return 0.0
    if criterion == "beta":
        v1 = counts[0]
        v2 = counts[1] if len(counts) > 1 else 0
        return float(1.0 - betainc(v1 + 1, v2 + 1, 0.5))
    if criterion == "dirichlet":
        alpha = np.asarray([*counts, 0], dtype=float) + 1.0
        rng = np.random.default_rng(0)
        draws = rng.dirichlet(alpha, size=_DRAWS)
        return float(np.mean(np.argmax(draws, axis=1) == 0))
    raise ConfigError(f"unknown criterion {criterion!r}: use 'beta' or 'dirichlet'")


@dataclass(frozen=True, slots=True)
class ConsistencyDecision:
    """What the rule decided after the samples so far.

    Attributes:
        stop: Stop sampling now.
        leader: The leading answer (normalized), ``None`` when no sample had one.
        probability: Posterior probability that the leader is the majority answer.
        samples: Samples seen (votes plus samples without an answer).
        reason: Why, in words, for the run's notes and stop reason.
    """

    stop: bool
    leader: str | None
    probability: float
    samples: int
    reason: str


@dataclass(frozen=True, slots=True)
class AdaptiveConsistency:
    """The Adaptive-Consistency stopping rule (see the module docstring).

    Attributes:
        threshold: Stop once the leader is the majority with at least this probability
            (the paper's 0.95 by default).
        max_samples: Never draw more (the fixed self-consistency budget it replaces).
        min_samples: Never stop before this many samples.
        batch: Samples drawn in parallel per round (1: strictly sequential, the fewest
            samples; larger: fewer rounds).
        criterion: ``beta`` or ``dirichlet``.

    Example:
        >>> rule = AdaptiveConsistency(threshold=0.9)
        >>> rule.decide(["7", "7"]).stop, rule.decide(["7", "7", "7"]).stop
        (False, True)
    """

    threshold: float = 0.95
    max_samples: int = 16
    min_samples: int = 1
    batch: int = 1
    criterion: Criterion = "beta"
    name: str = "adaptive_consistency"

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold < 1:
            raise ConfigError(f"adaptive_consistency needs 0.5 <= threshold < 1, got "
                              f"{self.threshold}")
        if not 1 <= self.min_samples <= self.max_samples <= 256:
            raise ConfigError("adaptive_consistency needs 1 <= min_samples <= max_samples "
                              f"<= 256, got {self.min_samples} and {self.max_samples}")
        if not 1 <= self.batch <= self.max_samples:
            raise ConfigError(f"adaptive_consistency needs 1 <= batch <= max_samples, got "
                              f"{self.batch}")
        if self.criterion not in ("beta", "dirichlet"):
            raise ConfigError(f"unknown criterion {self.criterion!r}: use 'beta' or "
                              "'dirichlet'")

    def allocate(self, difficulties: Sequence[float | None], total: int) -> list[int]:
        """Equal shares, as :class:`~stratagem.budgets.Uniform`: the rule saves inside runs."""
        return apportion([1.0] * len(difficulties), total)

    def decide(self, answers: Sequence[str]) -> ConsistencyDecision:
        """Apply the rule to the (normalized) answers sampled so far; ``""`` is no answer."""
        votes = Counter(a for a in answers if a)
        n = len(answers)
        leader = max(votes, key=lambda a: (votes[a], -answers.index(a))) if votes else None
        p = majority_probability(list(votes.values()), self.criterion)
        said = f"P(majority) {p:.3f} after {n} sample(s)"
        if n >= self.min_samples and p >= self.threshold:
            return ConsistencyDecision(True, leader, p, n,
                                       f"adaptive consistency: {said} >= {self.threshold}")
        if n >= self.max_samples:
            return ConsistencyDecision(True, leader, p, n,
                                       f"adaptive consistency: {said}, at max_samples")
        return ConsistencyDecision(False, leader, p, n,
                                   f"adaptive consistency: {said} < {self.threshold}")
