"""What every suite shares: the :class:`Task` record and the :class:`Suite` interface."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stratagem.agents import answers_match, extract_answer
from stratagem.errors import ConfigError
from stratagem.logging import get_logger

__all__ = ["ANSWER_LINE", "MAX_FEW_SHOT", "IntRange", "Suite", "Task", "check_count",
           "distinct_draws", "int_range", "warn_repeated"]

_log = get_logger("stratagem.tasks")

_REDRAWS = 64
"""Fresh draws tried for a task whose question was already drawn, before keeping a repeat."""

ANSWER_LINE = "End your reply with a line of the form `Answer: <answer>`."
"""The instruction closing every question whose answer is read by ``extract_answer``."""

MAX_FEW_SHOT = 16
"""The most few-shot demonstrations :meth:`Suite.demonstrations` draws."""

_DEMO_DRAW = 256
"""Tasks generated per round when looking for demonstrations."""

_DEMO_SEED = 1_000_003
"""Offset between the task draw's seed and the demonstration draws' seeds."""

IntRange = int | tuple[int, int]
"""A fixed value, or an inclusive ``(min, max)`` range drawn from uniformly per task."""


class Task(BaseModel):
    """One problem of a suite, with what its checker needs.

    Example:
        >>> Task(id="t1", suite="demo", question="What is 2+2?", answer="4").answer
        '4'
    """

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True, extra="forbid")

    id: str
    """Unique within its suite (``arith/0/3``, ``HumanEval/12``, ...)."""
    suite: str
    """The name of the suite that made it."""
    question: str
    """The full prompt given to the solver, including how to format the answer."""
    answer: str | None = None
    """The gold answer when there is one (for ``words``, one of many; for ``humaneval``, the
    canonical function)."""
    difficulty: float | None = Field(default=None, ge=0.0, le=1.0)
    """A difficulty label in [0, 1] (higher is harder), or ``None`` when unknown."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """JSON-able details the checker and reports use (graph, entry point, checker spec, ...)."""

    @field_validator("metadata")
    @classmethod
    def _json_able(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata must be JSON-able: {exc}") from exc
        return value


class Suite(ABC):
    """A family of tasks with an exact checker.

    Subclasses set :attr:`name` and implement :meth:`generate` and :meth:`check`.
    """

    name: str
    """The suite's name, put on its tasks (for a built-in suite, its key in
    :data:`~stratagem.tasks.SUITES`)."""

    @abstractmethod
    def generate(self, n: int, *, seed: int = 0) -> list[Task]:
        """``n`` tasks; the same seed always gives the same tasks.

        Args:
            n: How many tasks.
            seed: Seeds every random choice.

        Raises:
            ConfigError: ``n`` is negative, or more than a fixed suite holds.
        """

    @abstractmethod
    def check(self, task: Task, response: str) -> bool:
        """Whether ``response`` (the model's full reply) solves ``task``. Never raises."""

    def verifier(self, task: Task) -> Callable[[str], bool]:
        """``task``'s checker as a function of the response (a "perfect verifier")."""

        def verify(response: str) -> bool:
            return self.check(task, response)

        return verify

    def averifier(self, task: Task) -> Callable[[str], Awaitable[bool]]:
        """Like :meth:`verifier`, but awaitable: the check runs in a worker thread, so a slow
        one (``humaneval`` runs a subprocess) does not block the event loop."""

        async def verify(response: str) -> bool:
            return await asyncio.to_thread(self.check, task, response)

        return verify

    def demonstrations(self, k: int, *, exclude: Collection[str] = (),
                       seed: int = 0) -> list[tuple[str, str]]:
        """``k`` worked examples for few-shot prompting: ``(question, reply)`` pairs.

        Each is a task of this suite with a known answer, and its reply is that answer in
        the form the checker reads (:meth:`demonstration_reply`). No demonstration repeats
        a question in ``exclude`` (the tasks being evaluated, so none is answered in its
        own prompt) or another demonstration. The same arguments give the same examples.

        Args:
            k: How many, from 0 to :data:`MAX_FEW_SHOT`.
            exclude: Questions the examples must not repeat.
            seed: Seeds the draw (use the task draw's seed: examples then follow it).

        Raises:
            ConfigError: ``k`` is out of range, or the suite has fewer than ``k`` tasks with
                an answer whose question is not excluded.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_FEW_SHOT:
            raise ConfigError(f"few_shot must be an integer from 0 to {MAX_FEW_SHOT}, "
                              f"got {k!r}")
        seen = set(exclude)
        picked: list[tuple[str, str]] = []
        unanswered = 0
        for task in self._demonstration_candidates(seed):
            if len(picked) == k:
                break
            if task.question in seen:
                continue
            seen.add(task.question)
            if task.answer is None:
                unanswered += 1
            else:
                picked.append((task.question, self.demonstration_reply(task)))
        if len(picked) < k:
            why = (f" or have no gold `answer` to show ({unanswered} of them: a checker "
                   "alone cannot make an example)") if unanswered else ""
            raise ConfigError(
                f"suite {self.name!r} can give only {len(picked)} of the {k} few-shot "
                "examples asked for: its other questions are among the tasks drawn (an "
                f"example must not be a task being evaluated){why}. Lower few_shot, draw "
                "fewer tasks (n), or widen the suite's parameters"
            )
        return picked

    def draw_apart(self, n: int, *, exclude: Collection[str] = (),
                   seed: int = 0) -> list[Task]:
        """``n`` tasks whose questions are not in ``exclude`` nor repeated: a split drawn
        apart from the tasks being evaluated (e.g. to calibrate a policy on).

        Raises:
            ConfigError: If the suite has fewer than ``n`` other questions.
        """
        seen = set(exclude)
        picked: list[Task] = []
        for task in self._demonstration_candidates(seed):
            if len(picked) == n:
                break
            if task.question not in seen:
                seen.add(task.question)
                picked.append(task)
        if len(picked) < n:
            raise ConfigError(
                f"suite {self.name!r} has only {len(picked)} questions apart from the "
                f"{len(set(exclude))} excluded (the tasks drawn and their examples), {n} "
                "asked for: draw fewer tasks, ask for fewer, or widen the suite's parameters")
        return picked

    def demonstration_reply(self, task: Task) -> str:
        """How a worked example's reply reads: ``Answer: <gold>`` (the line
        :func:`~stratagem.agents.extract_answer` reads); suites whose checker reads something
        else override it."""
        return f"Answer: {task.answer}"

    def _demonstration_candidates(self, seed: int) -> Iterator[Task]:
        """Tasks to pick demonstrations from, in a seeded order. Generated suites draw a few
        rounds of fresh tasks; fixed suites override this to shuffle their whole pool."""
        for round_ in range(1, 5):
            yield from self.generate(_DEMO_DRAW, seed=seed + round_ * _DEMO_SEED)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def exact_check(task: Task, response: str) -> bool:
    """The extracted answer of ``response`` matches ``task.answer`` (see ``answers_match``)."""
    if task.answer is None:
        return False
    return answers_match(extract_answer(response), task.answer)


def check_count(n: object, *, available: int | None = None) -> int:
    """``n`` validated as a task count (at most ``available`` when the suite is fixed)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be a non-negative integer, got {n!r}")
    if available is not None and n > available:
        raise ConfigError(f"n={n} but the suite holds only {available} tasks; ask for fewer")
    return n


def warn_repeated(suite: str, n: int, distinct: int) -> None:
    """Log that ``n`` tasks were asked of ``suite`` but only ``distinct`` questions exist."""
    _log.warning("tasks.repeated", suite=suite, n=n, distinct=distinct,
                 hint=f"{n - distinct} task(s) repeat a question: with the same seeds they "
                      "repeat its outputs too, so the effective n is smaller; draw at most "
                      f"{distinct} or widen the suite's parameters")


def distinct_draws(suite: str, n: int, draw: Callable[[int], Task]) -> list[Task]:
    """``n`` tasks from ``draw(i)``, no question twice while the draws allow.

    A task whose question was already drawn is drawn again (up to a fixed number of times);
    a repeat that survives is kept, and one ``tasks.repeated`` warning says how many distinct
    questions there are. The same ``draw`` (seeded) gives the same tasks.
    """
    seen: set[str] = set()
    tasks = []
    for i in range(n):
        task = draw(i)
        for _ in range(_REDRAWS):
            if task.question not in seen:
                break
            task = draw(i)
        seen.add(task.question)
        tasks.append(task)
    if len(seen) < n:
        warn_repeated(suite, n, len(seen))
    return tasks


def int_range(name: str, value: object, *, low: int, high: int) -> tuple[int, int]:
    """A parameter given as an int or an inclusive ``(min, max)`` pair, checked to lie in
    ``[low, high]``; raises :class:`ConfigError` naming ``name`` otherwise."""
    hint = f"give an integer in [{low}, {high}] or a (min, max) pair within it"
    if isinstance(value, list):
        value = tuple(value)  # from a JSON or YAML config
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif (
        isinstance(value, tuple) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (value[0], value[1])
    else:
        raise ConfigError(f"{name}: expected an integer or a (min, max) pair, got {value!r}; "
                          f"{hint}")
    if not low <= pair[0] <= pair[1] <= high:
        raise ConfigError(f"{name}={value!r} is out of range; {hint}")
    return pair
