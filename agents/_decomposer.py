"""The decomposer: breaks a task into ordered subtasks with dependencies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stratagem.agents._client import ModelClient
from stratagem.agents._prompts import DECOMPOSER_PROMPT, PromptTemplate
from stratagem.agents._structured import RoleOutput, complete_structured, extract_json

__all__ = ["Decomposer", "Decomposition", "LLMDecomposer", "Subtask", "SubtaskDict"]


class SubtaskDict(TypedDict):
    """A :class:`Subtask` as graph state holds it (:meth:`Subtask.as_dict`)."""

    id: str
    description: str
    depends_on: list[str]


class Subtask(BaseModel):
    """One step of a decomposed task."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    id: str
    """A short id, unique within the decomposition (numbers are read as strings)."""
    description: str
    """What to do in this step."""
    depends_on: list[str] = Field(default_factory=list)
    """Ids of the subtasks whose results this one needs."""

    def as_dict(self) -> SubtaskDict:
        """This subtask as graph state holds it (a typed ``model_dump()``)."""
        return SubtaskDict(id=self.id, description=self.description,
                           depends_on=list(self.depends_on))

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value).strip() if isinstance(value, int | str) else value

    @field_validator("depends_on", mode="before")
    @classmethod
    def _deps_as_text(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, int | str):
            value = [value]
        if isinstance(value, list):
            return [str(v).strip() if isinstance(v, int | str) else v for v in value]
        return value


class Decomposition(RoleOutput):
    """Subtasks with dependencies: ids are unique, dependencies exist, and there is no cycle."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    subtasks: list[Subtask] = Field(min_length=1)
    """The subtasks, in the order the decomposer listed them."""

    @model_validator(mode="after")
    def _check_graph(self) -> Decomposition:
        ids = [s.id for s in self.subtasks]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"subtask ids must be unique (repeated: {', '.join(duplicates)})")
        known = set(ids)
        for s in self.subtasks:
            unknown = [d for d in s.depends_on if d not in known]
            if unknown:
                raise ValueError(
                    f"subtask {s.id!r} depends on unknown id(s) {', '.join(unknown)}"
                )
        self._topological()  # raises on a cycle
        return self

    def _topological(self) -> list[Subtask]:
        # Kahn's algorithm, always taking the earliest listed subtask that is ready, so the
        # order is deterministic and follows the decomposer's own order where it can.
        done: set[str] = set()
        order: list[Subtask] = []
        pending = list(self.subtasks)
        while pending:
            step = next((s for s in pending if done.issuperset(s.depends_on)), None)
            if step is None:
                stuck = ", ".join(s.id for s in pending)
                raise ValueError(f"dependency cycle among subtasks {stuck}")
            pending.remove(step)
            done.add(step.id)
            order.append(step)
        return order

    def order(self) -> list[Subtask]:
        """Every subtask, each after all of its dependencies (ties in listed order)."""
        return self._topological()

    def independent(self) -> bool:
        """Whether no subtask depends on another, so all may run in parallel."""
        return not any(s.depends_on for s in self.subtasks)

    def ready(self, done_ids: Iterable[str]) -> list[Subtask]:
        """Subtasks not yet done whose dependencies all are, in listed order."""
        done = set(done_ids)
        return [s for s in self.subtasks if s.id not in done and done.issuperset(s.depends_on)]

    def get(self, subtask_id: str) -> Subtask:
        """The subtask with id ``subtask_id``.

        Raises:
            KeyError: If there is none.
        """
        for s in self.subtasks:
            if s.id == subtask_id:
                return s
        raise KeyError(subtask_id)


@runtime_checkable
class Decomposer(Protocol):
    """Breaks a task into ordered subtasks with dependencies."""

    async def decompose(
        self,
        client: ModelClient,
        task: str,
        *,
        node: str = "decomposer",
        branch: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
    ) -> Decomposition:
        """Decompose ``task``.

        Args:
            client: Makes and records any model calls.
            task: The task text.
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


class LLMDecomposer:
    """The default decomposer: asks the model for JSON subtasks.

    A reply with more than ``max_subtasks`` subtasks, a dependency cycle or an unknown
    dependency counts as a parse failure and gets the one repair attempt.

    Args:
        template: The prompt (fields ``task``, ``max_subtasks``).
        max_subtasks: The most subtasks accepted.
        max_output: Output cap per call.
        role: The role charged in the ledger.
    """

    def __init__(
        self,
        template: PromptTemplate = DECOMPOSER_PROMPT,
        *,
        max_subtasks: int = 6,
        max_output: int = 384,
        role: str = "decomposer",
    ) -> None:
        if max_subtasks < 1:
            raise ValueError("max_subtasks must be >= 1")
        self.template = template
        self.max_subtasks = max_subtasks
        self.max_output = max_output
        self.role = role

    def parse(self, text: str) -> Decomposition:
        """Read a decomposition from reply text.

        Raises:
            ValueError: If it is not a valid decomposition of at most ``max_subtasks`` steps.
        """
        result = Decomposition.model_validate(extract_json(text))
        if len(result.subtasks) > self.max_subtasks:
            raise ValueError(
                f"{len(result.subtasks)} subtasks given, at most {self.max_subtasks} allowed"
            )
        return result

    async def decompose(
        self,
        client: ModelClient,
        task: str,
        *,
        node: str = "decomposer",
        branch: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
    ) -> Decomposition:
        """Decompose ``task``.

        Raises:
            OutputParseError: If no valid decomposition came back after one repair attempt.
        """
        messages = self.template.render(task=task, max_subtasks=self.max_subtasks)
        result = await complete_structured(
            client, messages, Decomposition, role=self.role, node=node,
            max_output=self.max_output, parse=self.parse,
            format_hint=f'one JSON object like {{"subtasks": [{{"id": "1", "description": '
                        f'"...", "depends_on": []}}]}} with at most {self.max_subtasks} '
                        f"subtasks",
            branch=branch, temperature=temperature, seed=seed, stop=stop, stream=stream,
            task_id=task_id, labels=labels, extra=extra, allowance=allowance,
        )
        return result.value
