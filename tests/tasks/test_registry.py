"""Suites by name, and the shared Task record."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stratagem.errors import ConfigError
from stratagem.tasks import SUITES, ArithSuite, Task, WordsSuite, get_suite


def test_builtin_suites_by_name() -> None:
    assert set(SUITES) == {"arith", "connectivity", "words", "humaneval", "jsonl"}
    suite = get_suite("arith", depth=(2, 4), max_operand=5)
    assert isinstance(suite, ArithSuite) and suite.depth == (2, 4)
    assert isinstance(get_suite("words", length=[3, 5]), WordsSuite)  # a list from JSON


def test_unknown_suite_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown task suite 'arithmetic'.*arith, connectivity"):
        get_suite("arithmetic")


def test_unknown_or_missing_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"has no parameter 'dept'.*depth, max_operand, ops"):
        get_suite("arith", dept=3)
    with pytest.raises(ConfigError, match="needs the parameter 'path'"):
        get_suite("jsonl")
    with pytest.raises(ConfigError, match="depth"):
        get_suite("arith", depth=-1)


def test_task_is_frozen_validated_and_json_able() -> None:
    task = Task(id="t", suite="s", question="q", answer="a", difficulty=0.5,
                metadata={"k": [1, 2]})
    assert Task.model_validate_json(task.model_dump_json()) == task
    with pytest.raises(ValidationError):
        task.id = "u"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Task(id="t", suite="s", question="q", difficulty=1.5)
    with pytest.raises(ValidationError, match="JSON-able"):
        Task(id="t", suite="s", question="q", metadata={"x": object()})


def test_verifier_is_the_checker() -> None:
    suite = get_suite("arith")
    task = suite.generate(1)[0]
    verify = suite.verifier(task)
    assert verify(f"Answer: {task.answer}") and not verify("Answer: nope")
