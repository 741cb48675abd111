"""The judge: reasons, then scores one candidate or picks the better of two.

:class:`LLMJudge` asks the model to think first and end with ``SCORE:``/``VERDICT:`` lines (or
``WINNER:``), which even a very small model can produce more reliably than JSON.
:class:`VerifierJudge` puts a task's programmatic checker in the judge's place (no model calls),
for "perfect verifier" ablations.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from pydantic import ConfigDict, Field

from stratagem.agents._client import ModelClient
from stratagem.agents._prompts import JUDGE_PAIRWISE_PROMPT, JUDGE_POINTWISE_PROMPT, PromptTemplate
from stratagem.agents._structured import RoleOutput, complete_structured

__all__ = [
    "Checker",
    "Judge",
    "LLMJudge",
    "PairwiseVerdict",
    "Verdict",
    "VerdictDict",
    "VerifierJudge",
    "parse_pairwise",
    "parse_verdict",
]

Checker = Callable[[str], bool | float | Awaitable[bool | float]]
"""A task's programmatic checker: a candidate in, ``True``/``False`` or a score in [0, 1] out
(sync or async)."""

_SEP = r"[\s*_`]*"  # markdown a model puts around labels: "**SCORE:** 0.8"
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_SCORE = re.compile(
    rf"(?i)\bscore\b{_SEP}[:=]?{_SEP}(?P<num>{_NUM})\s*"
    rf"(?:(?P<pct>%)|/\s*(?P<den>{_NUM})|out\s+of\s+(?P<den2>{_NUM}))?"
)
_VERDICT = re.compile(rf"(?i)\bverdict\b{_SEP}[:=]?{_SEP}(?P<word>[a-z]+)")
_WINNER = re.compile(
    rf"(?i)\bwinner\b{_SEP}(?:is\b)?{_SEP}[:=]?{_SEP}(?:(?:answer|response|candidate)\s+)?"
    r"[(\[]?(?P<w>[ab])\b"
)
_ACCEPT = {"accept", "accepted", "pass", "passed", "yes", "correct", "valid", "good"}
_REJECT = {"reject", "rejected", "fail", "failed", "no", "incorrect", "invalid", "wrong", "bad"}
_TRIM = " \t\r\n*_#`-:"


class VerdictDict(TypedDict):
    """A :class:`Verdict` as a plain dict (:meth:`Verdict.as_dict`)."""

    score: float
    verdict: Literal["accept", "reject"]
    rationale: str


class Verdict(RoleOutput):
    """A pointwise judgement of one candidate."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    score: float = Field(ge=0.0, le=1.0)
    """How good the candidate is, from 0 (wrong) to 1 (certainly right)."""
    verdict: Literal["accept", "reject"]
    """Whether to accept the candidate."""
    rationale: str = ""
    """The judge's reasoning, written before it scored."""

    def as_dict(self) -> VerdictDict:
        """This verdict as a plain dict (a typed ``model_dump()``)."""
        return VerdictDict(score=self.score, verdict=self.verdict, rationale=self.rationale)


class PairwiseVerdict(RoleOutput):
    """The better of two candidates."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    winner: Literal["A", "B"]
    """The better candidate: ``A`` (the first) or ``B`` (the second)."""
    rationale: str = ""
    """The judge's reasoning, written before it chose."""


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    match = None
    for match in pattern.finditer(text):  # noqa: B007 - keep the last one
        pass
    return match


def _normalise_score(m: re.Match[str]) -> float:
    value = float(m["num"])
    den = m["den"] or m["den2"]
    if m["pct"]:
        value /= 100
    elif den is not None:
        if float(den) <= 0:
            raise ValueError(f"score {m.group(0).strip()!r} has a zero denominator")
        value /= float(den)
    elif value > 10:  # no scale given: 0-100 read as a percentage, 0-10 as tenths
        value /= 100
    elif value > 1:
        value /= 10
    return min(1.0, max(0.0, value))


def parse_verdict(text: str, *, threshold: float = 0.5) -> Verdict:
    """Read a pointwise verdict from a judge's reply, leniently.

    The last ``SCORE:`` and ``VERDICT:`` lines count (any case, markdown allowed). Scores
    written as ``85%``, ``7/10``, ``8 out of 10``, or plainly on a 0-10 or 0-100 scale are
    normalised, then clamped to [0, 1]. Without a verdict line the verdict is
    ``score >= threshold``; without a score line the score is 1 or 0 from the verdict. The
    rationale is the text before those lines.

    Raises:
        ValueError: If the reply has neither a score nor a verdict.
    """
    score_m = _last(_SCORE, text)
    verdict_m = _last(_VERDICT, text)
    word = verdict_m["word"].lower() if verdict_m else ""
    verdict: Literal["accept", "reject"] | None = (
        "accept" if word in _ACCEPT else "reject" if word in _REJECT else None
    )
    if verdict is None:
        verdict_m = None
    if score_m is None and verdict is None:
        raise ValueError("no 'SCORE: <number from 0 to 1>' line and no 'VERDICT:' line")
    if score_m is not None:
        score = _normalise_score(score_m)
    else:
        score = 1.0 if verdict == "accept" else 0.0
    if verdict is None:
        verdict = "accept" if score >= threshold else "reject"
    cut = min(m.start() for m in (score_m, verdict_m) if m is not None)
    return Verdict(score=score, verdict=verdict, rationale=text[:cut].rstrip(_TRIM).strip())


def parse_pairwise(text: str) -> PairwiseVerdict:
    """Read a pairwise verdict: the last ``WINNER: A`` or ``WINNER: B`` (any case) line.

    Raises:
        ValueError: If there is no such line.
    """
    m = _last(_WINNER, text)
    if m is None:
        raise ValueError("no 'WINNER: A' or 'WINNER: B' line")
    winner: Literal["A", "B"] = "A" if m["w"].upper() == "A" else "B"
    return PairwiseVerdict(winner=winner, rationale=text[: m.start()].rstrip(_TRIM).strip())


@runtime_checkable
class Judge(Protocol):
    """Scores a candidate (pointwise) or picks the better of two (pairwise)."""

    async def score(
        self,
        client: ModelClient,
        task: str,
        candidate: str,
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
    ) -> Verdict:
        """Judge one candidate answer to ``task``.

        Args:
            client: Makes and records any model calls.
            task: The task text.
            candidate: The candidate answer (or full solution text).
            node: The graph node, for the ledger.
            branch: The graph branch, for the ledger.
            temperature: Sampling temperature.
            seed: Sampling seed.
            stop: Stop sequences.
            stream: Stream the reply (usage still recorded; see :meth:`ModelClient.complete`).
            task_id: The LangGraph task id, for the ledger.
            labels: Labels put on every ledger row of the call.
            extra: Provider-specific request fields.
            allowance: A cap on this call's own total tokens (a branch's reserved share).
        """
        ...

    async def compare(
        self,
        client: ModelClient,
        task: str,
        a: str,
        b: str,
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
    ) -> PairwiseVerdict:
        """Pick the better of candidates ``a`` and ``b`` (same arguments as :meth:`score`)."""
        ...


class LLMJudge:
    """The default judge: the model reasons, then writes ``SCORE``/``VERDICT`` or ``WINNER``.

    A reply without those lines gets the one repair attempt of
    :func:`~stratagem.agents.complete_structured`; if that fails too,
    :class:`~stratagem.errors.OutputParseError` is raised.

    Args:
        pointwise_template: Prompt for :meth:`score` (fields ``task``, ``candidate``).
        pairwise_template: Prompt for :meth:`compare` (fields ``task``, ``a``, ``b``).
        threshold: Score at or above which a verdict missing from the reply is ``accept``.
        max_output: Output cap per call (room for the reasoning).
        role: The role charged in the ledger.
    """

    def __init__(
        self,
        pointwise_template: PromptTemplate = JUDGE_POINTWISE_PROMPT,
        pairwise_template: PromptTemplate = JUDGE_PAIRWISE_PROMPT,
        *,
        threshold: float = 0.5,
        max_output: int = 384,
        role: str = "judge",
    ) -> None:
        self.pointwise_template = pointwise_template
        self.pairwise_template = pairwise_template
        self.threshold = threshold
        self.max_output = max_output
        self.role = role

    def _parse_verdict(self, text: str) -> Verdict:
        return parse_verdict(text, threshold=self.threshold)

    async def score(
        self,
        client: ModelClient,
        task: str,
        candidate: str,
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
    ) -> Verdict:
        """Judge one candidate (see :meth:`Judge.score`)."""
        messages = self.pointwise_template.render(task=task, candidate=candidate)
        result = await complete_structured(
            client, messages, Verdict, role=self.role, node=node,
            max_output=self.max_output, parse=self._parse_verdict,
            format_hint="a short reason, then the two lines 'SCORE: <number from 0 to 1>' "
                        "and 'VERDICT: accept' or 'VERDICT: reject'",
            branch=branch, temperature=temperature, seed=seed, stop=stop, stream=stream,
            task_id=task_id, labels=labels, extra=extra, allowance=allowance,
        )
        return result.value

    async def compare(
        self,
        client: ModelClient,
        task: str,
        a: str,
        b: str,
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
    ) -> PairwiseVerdict:
        """Pick the better of two candidates (see :meth:`Judge.compare`)."""
        messages = self.pairwise_template.render(task=task, a=a, b=b)
        result = await complete_structured(
            client, messages, PairwiseVerdict, role=self.role, node=node,
            max_output=self.max_output, parse=parse_pairwise,
            format_hint="a short reason, then the line 'WINNER: A' or 'WINNER: B'",
            branch=branch, temperature=temperature, seed=seed, stop=stop, stream=stream,
            task_id=task_id, labels=labels, extra=extra, allowance=allowance,
        )
        return result.value


class VerifierJudge:
    """A task's checker in the judge's place: exact scores, no model calls, no tokens.

    Args:
        checker: Scores a candidate: ``True``/``False`` (1.0/0.0) or a number (clamped to
            [0, 1]); may be async. Exceptions it raises propagate.
        threshold: Score at or above which the verdict is ``accept``.
    """

    def __init__(self, checker: Checker, *, threshold: float = 0.5) -> None:
        self.checker = checker
        self.threshold = threshold

    async def check(self, candidate: str) -> float:
        """The checker's score for ``candidate``, in [0, 1]."""
        result = self.checker(candidate)
        if inspect.isawaitable(result):
            result = await result
        return min(1.0, max(0.0, float(result)))

    async def score(
        self,
        client: ModelClient,
        task: str,
        candidate: str,
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
    ) -> Verdict:
        """Score with the checker; ``client`` is not used."""
        value = await self.check(candidate)
        verdict: Literal["accept", "reject"] = "accept" if value >= self.threshold else "reject"
        return Verdict(score=value, verdict=verdict, rationale=f"verifier score {value:g}")

    async def compare(
        self,
        client: ModelClient,
        task: str,
        a: str,
        b: str,
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
    ) -> PairwiseVerdict:
        """Prefer the candidate the checker scores higher (``A`` on a tie); no model calls."""
        score_a, score_b = await self.check(a), await self.check(b)
        winner: Literal["A", "B"] = "B" if score_b > score_a else "A"
        return PairwiseVerdict(
            winner=winner, rationale=f"verifier scores A={score_a:g}, B={score_b:g}"
        )
