"""A single-elimination tournament over N candidates, decided by a judge's pairwise calls."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stratagem.agents._client import ModelClient
from stratagem.agents._judge import Judge, PairwiseVerdict
from stratagem.budgets import LedgerEntry

__all__ = ["KnockoutResult", "knockout"]


@dataclass(frozen=True, slots=True)
class KnockoutResult:
    """The outcome of :func:`knockout`.

    Attributes:
        winner_index: Index of the winning candidate.
        winner_text: The winning candidate.
        matches: Every match in the order played, as ``(i, j, winner_index)`` where ``i``
            was shown as ``A`` and ``j`` as ``B``.
        verdicts: The judge's verdict for each match, in the same order.
    """

    winner_index: int
    winner_text: str
    matches: tuple[tuple[int, int, int], ...]
    verdicts: tuple[PairwiseVerdict, ...]

    @property
    def call_ids(self) -> tuple[str, ...]:
        """Ledger call ids of every match's accepted judge reply."""
        return tuple(cid for v in self.verdicts for cid in v.call_ids)

    @property
    def rows(self) -> tuple[LedgerEntry, ...]:
        """Ledger rows of every match's accepted judge reply."""
        return tuple(r for v in self.verdicts for r in v.rows)

    @property
    def rounds(self) -> int:
        """How many rounds were played (0 for a single candidate)."""
        n, rounds = len(self.matches) + 1, 0
        while n > 1:
            n, rounds = (n + 1) // 2, rounds + 1
        return rounds


async def knockout(
    judge: Judge,
    client: ModelClient,
    task: str,
    candidates: Sequence[str],
    *,
    node: str = "judge",
    branch: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    stream: bool = False,
    task_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    allowance: int | None = None,
) -> KnockoutResult:
    """Pick the best of ``candidates`` by single elimination: N - 1 pairwise matches.

    Each round pairs the survivors in index order, (0, 1), (2, 3), ...; with an odd count the
    last one gets a bye into the next round. The lower index is always shown as ``A``. The
    matches of one round run concurrently, each on its own branch (``ko-r<round>-m<match>``,
    under ``branch`` if given) so the ledger tells them apart; the bracket itself is
    deterministic. If a match fails, the other matches of its round still finish (their
    calls are recorded), then the first error is raised.

    Args:
        judge: Decides each match with :meth:`Judge.compare`.
        client: Makes and records the judge's model calls.
        task: The task the candidates answer.
        candidates: The candidate answers.
        node: The graph node, for the ledger.
        branch: Prefix of the match branches, for the ledger.
        temperature, seed, stop, stream, task_id, labels, extra, allowance: Passed on to
            every :meth:`Judge.compare` (see :meth:`Judge.score`).

    Raises:
        ValueError: If there are no candidates.
    """
    if not candidates:
        raise ValueError("knockout needs at least one candidate")
    alive = list(range(len(candidates)))
    matches: list[tuple[int, int, int]] = []
    verdicts: list[PairwiseVerdict] = []
    round_no = 0
    while len(alive) > 1:
        round_no += 1
        pairs = [(alive[k], alive[k + 1]) for k in range(0, len(alive) - 1, 2)]
        bye = [alive[-1]] if len(alive) % 2 else []
        prefix = f"{branch}/" if branch else ""
        results = await asyncio.gather(*(
            judge.compare(client, task, candidates[i], candidates[j], node=node,
                          branch=f"{prefix}ko-r{round_no}-m{m}", temperature=temperature,
                          seed=seed, stop=stop, stream=stream, task_id=task_id,
                          labels=labels, extra=extra, allowance=allowance)
            for m, (i, j) in enumerate(pairs, start=1)
        ), return_exceptions=True)
        alive = []
        for (i, j), verdict in zip(pairs, results, strict=True):
            if isinstance(verdict, BaseException):
                raise verdict
            won = i if verdict.winner == "A" else j
            matches.append((i, j, won))
            verdicts.append(verdict)
            alive.append(won)
        alive.extend(bye)
    return KnockoutResult(
        winner_index=alive[0],
        winner_text=candidates[alive[0]],
        matches=tuple(matches),
        verdicts=tuple(verdicts),
    )
