"""The planner: reads a task and chooses a strategy and a split of the budget between roles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from pydantic import ConfigDict, Field, field_validator

from stratagem.agents._client import ModelClient
from stratagem.agents._prompts import PLANNER_PROMPT, PromptTemplate
from stratagem.agents._structured import RoleOutput, complete_structured

__all__ = ["DEFAULT_ROLES", "LLMPlanner", "Mode", "Plan", "PlanDict", "Planner"]

Mode = Literal["direct", "decompose", "parallel", "sequential"]
"""How a task is attacked: one solve, subtasks, best-of-N sampling, or refinement rounds."""

DEFAULT_ROLES: tuple[str, ...] = ("planner", "decomposer", "solver", "judge")
"""The four built-in roles."""

# Words a small model uses for a mode instead of its exact name.
_MODE_SYNONYMS = {
    "single": "direct", "solve": "direct", "direct solve": "direct",
    "decomposition": "decompose", "split": "decompose",
    "parallel sampling": "parallel", "sampling": "parallel", "best-of-n": "parallel",
    "sequential refinement": "sequential", "refine": "sequential", "refinement": "sequential",
}


class PlanDict(TypedDict, total=False):
    """A :class:`Plan` as graph state holds it (:meth:`Plan.as_dict`). Keys may be missing:
    a graph that skipped its planner records only ``mode`` (and ``rationale``)."""

    mode: Mode
    samples: int
    rounds: int
    difficulty: float
    budget_split: dict[str, float]
    rationale: str


class Plan(RoleOutput):
    """A strategy for one task. Every field has a default, so a partial reply still plans."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    mode: Mode = "direct"
    """The strategy: ``direct``, ``decompose``, ``parallel`` or ``sequential``."""
    samples: int = Field(default=1, ge=1, le=64)
    """Candidates to sample in ``parallel`` mode."""
    rounds: int = Field(default=1, ge=1, le=16)
    """Refinement rounds in ``sequential`` mode."""
    difficulty: float = Field(default=0.5, ge=0.0, le=1.0)
    """Estimated difficulty, 0 (trivial) to 1 (very hard)."""
    budget_split: dict[str, float] = Field(default_factory=dict)
    """Fraction of the budget per role, normalised to sum to 1 (empty: no preference)."""
    rationale: str = ""
    """Why this strategy."""

    @field_validator("mode", mode="before")
    @classmethod
    def _lenient_mode(cls, value: object) -> object:
        if isinstance(value, str):
            key = value.strip().lower()
            return _MODE_SYNONYMS.get(key, key)
        return value

    @field_validator("budget_split")
    @classmethod
    def _normalise(cls, split: dict[str, float]) -> dict[str, float]:
        return _normalise_split(split)

    def as_dict(self) -> PlanDict:
        """This plan as graph state holds it (a typed ``model_dump()``)."""
        return PlanDict(mode=self.mode, samples=self.samples, rounds=self.rounds,
                        difficulty=self.difficulty, budget_split=dict(self.budget_split),
                        rationale=self.rationale)

    def restricted_to(self, roles: Sequence[str]) -> Plan:
        """This plan with a budget split over ``roles`` only, renormalised.

        Shares for other roles are dropped; if none is left, the budget is split evenly.
        """
        split = {r: s for r, s in self.budget_split.items() if r in roles}
        if not split or sum(split.values()) <= 0:
            split = {r: 1.0 for r in roles}
        return self.model_copy(update={"budget_split": _normalise_split(split)})


def _normalise_split(split: dict[str, float]) -> dict[str, float]:
    negative = sorted(role for role, share in split.items() if share < 0)
    if negative:
        raise ValueError(f"budget shares must be >= 0 (negative for {', '.join(negative)})")
    total = sum(split.values())
    if split and total <= 0:
        raise ValueError("budget shares must not all be 0")
    return {role: share / total for role, share in split.items()}


@runtime_checkable
class Planner(Protocol):
    """Reads a task and decides the strategy and the budget split."""

    async def plan(
        self,
        client: ModelClient,
        task: str,
        *,
        roles_available: Sequence[str] = DEFAULT_ROLES,
        budget_tokens: int | None = None,
        node: str = "planner",
        branch: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
    ) -> Plan:
        """Plan ``task``.

        Args:
            client: Makes and records any model calls.
            task: The task text.
            roles_available: The roles the topology can run; the split covers only these.
            budget_tokens: The run's token budget, if any.
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


class LLMPlanner:
    """The default planner: asks the model for a JSON plan.

    If the reply does not parse even after the one repair attempt, :meth:`plan` raises
    :class:`~stratagem.errors.OutputParseError` rather than guessing: the graph layer decides
    the fallback (typically a ``direct`` plan), and the wasted tokens stay in the ledger.

    Args:
        template: The prompt (fields ``task``, ``roles``, ``budget``).
        max_output: Output cap per call.
        role: The role charged in the ledger.
    """

    def __init__(
        self,
        template: PromptTemplate = PLANNER_PROMPT,
        *,
        max_output: int = 256,
        role: str = "planner",
    ) -> None:
        self.template = template
        self.max_output = max_output
        self.role = role

    async def plan(
        self,
        client: ModelClient,
        task: str,
        *,
        roles_available: Sequence[str] = DEFAULT_ROLES,
        budget_tokens: int | None = None,
        node: str = "planner",
        branch: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
    ) -> Plan:
        """Plan ``task``; the budget split is restricted to ``roles_available``.

        Raises:
            OutputParseError: If the plan does not parse after one repair attempt.
        """
        messages = self.template.render(
            task=task,
            roles=", ".join(roles_available),
            budget="unlimited" if budget_tokens is None else f"{budget_tokens} tokens",
        )
        result = await complete_structured(
            client, messages, Plan, role=self.role, node=node, max_output=self.max_output,
            format_hint='one JSON object like {"mode": "direct", "samples": 1, "rounds": 1, '
                        '"difficulty": 0.5, "budget_split": {"solver": 1.0}, "rationale": "why"}',
            branch=branch, temperature=temperature, seed=seed, stop=stop, stream=stream,
            task_id=task_id, labels=labels, extra=extra, allowance=allowance,
        )
        return result.value.restricted_to(roles_available)
