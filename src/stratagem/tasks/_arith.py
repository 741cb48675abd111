"""``arith``: chains of integer operations, one step after another."""

from __future__ import annotations

import math
import random

from stratagem.errors import ConfigError
from stratagem.tasks._task import (
    ANSWER_LINE,
    IntRange,
    Suite,
    Task,
    check_count,
    distinct_draws,
    exact_check,
    int_range,
)

__all__ = ["ArithSuite"]

_VERBS = {"+": "Add {}.", "-": "Subtract {}.", "*": "Multiply by {}.", "/": "Divide by {}."}
MAX_DEPTH = 50
MAX_OPERAND = 1_000_000
"""Largest ``max_operand``: bigger operands test tokenization more than arithmetic, and it
bounds the search for divisors (at most this many trial divisions per ``/`` step)."""


class ArithSuite(Suite):
    """Multi-step arithmetic: "Start with 7. Add 3. Multiply by 2. Subtract 4. What is the
    result?", with the exact integer as the answer.

    Every intermediate value is an integer: division is only by a divisor of the current
    value (and ``/`` is used only alongside another operation). Difficulty is
    ``min(depth / 10, 1)``.

    Args:
        depth: Operations per chain, or an inclusive ``(min, max)`` range drawn from per task
            (so difficulty varies across a generated mix). From 1 to 50.
        max_operand: Largest operand (and start value); from 2 to 1,000,000.
        ops: The operations to draw from, any of ``+-*/``.

    Raises:
        ConfigError: A parameter is out of range.

    Example:
        >>> task = ArithSuite(depth=2).generate(1, seed=1)[0]
        >>> ArithSuite().check(task, f"Answer: {task.answer}")
        True
    """

    name = "arith"

    @staticmethod
    def divisors(value: int, limit: int) -> list[int]:
        """The divisors of ``value`` from 2 to ``limit``, ascending (none for 0).

        Trial division up to the square root of ``value`` or up to ``limit``, whichever is less
        work: values grow past any bound over a chain of multiplications, ``limit`` does not.
        """
        v = abs(value)
        if v < 2:
            return []
        root = math.isqrt(v)
        if root < limit:
            pairs = (d for d in range(1, root + 1) if v % d == 0)
            return sorted({x for d in pairs for x in (d, v // d) if 2 <= x <= limit})
        return [d for d in range(2, limit + 1) if v % d == 0]

    def __init__(self, depth: IntRange = 3, max_operand: int = 9, ops: str = "+-*") -> None:
        self.depth = int_range("depth", depth, low=1, high=MAX_DEPTH)
        if isinstance(max_operand, bool) or not isinstance(max_operand, int) \
                or not 2 <= max_operand <= MAX_OPERAND:
            raise ConfigError(f"max_operand must be an integer from 2 to {MAX_OPERAND}, got "
                              f"{max_operand!r}")
        self.max_operand = max_operand
        if (
            not isinstance(ops, str) or not ops or set(ops) - set(_VERBS)
            or len(set(ops)) != len(ops)
        ):
            raise ConfigError(
                f"ops must be a non-empty string of distinct operations from '+-*/', got {ops!r}"
            )
        if set(ops) == {"/"}:
            raise ConfigError("ops='/' alone cannot make integer chains; add '+', '-' or '*'")
        self.ops = ops

    def generate(self, n: int, *, seed: int = 0) -> list[Task]:
        """``n`` chains (see :meth:`Suite.generate`)."""
        rng = random.Random(f"arith:{seed}")
        return distinct_draws(self.name, check_count(n),
                              lambda i: self._one(rng, f"{self.name}/{seed}/{i}"))

    def _one(self, rng: random.Random, task_id: str) -> Task:
        depth = rng.randint(*self.depth)
        value = rng.randint(1, self.max_operand)
        start = value
        steps: list[list[str | int]] = []
        for _ in range(depth):
            op = rng.choice(self.ops)
            found = self.divisors(value, self.max_operand) if op == "/" else []
            if op == "/" and not found:
                op = rng.choice([o for o in self.ops if o != "/"])
            if op == "+":
                operand = rng.randint(1, self.max_operand)
                value += operand
            elif op == "-":
                operand = rng.randint(1, self.max_operand)
                value -= operand
            elif op == "*":
                operand = rng.randint(2, self.max_operand)
                value *= operand
            else:
                operand = rng.choice(found)
                value //= operand
            steps.append([op, operand])
        text = " ".join(_VERBS[str(op)].format(operand) for op, operand in steps)
        question = (
            f"Start with {start}. {text} What is the result?\n\n"
            f"Work through the steps in order. {ANSWER_LINE}"
        )
        return Task(
            id=task_id, suite=self.name, question=question, answer=str(value),
            difficulty=min(depth / 10, 1.0),
            metadata={"depth": depth, "start": start, "steps": steps},
        )

    def check(self, task: Task, response: str) -> bool:
        """The extracted answer equals the result exactly (``42.0`` counts as ``42``)."""
        return exact_check(task, response)
