"""The arithmetic-chain suite: deterministic, correct gold answers, strict checker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratagem.errors import ConfigError
from stratagem.tasks import ArithSuite, Task


def _replay(task: Task) -> int:
    value = int(task.metadata["start"])
    for op, operand in task.metadata["steps"]:
        if op == "+":
            value += operand
        elif op == "-":
            value -= operand
        elif op == "*":
            value *= operand
        else:
            assert value % operand == 0
            value //= operand
    return value


def test_same_seed_same_tasks_and_other_seed_other_tasks() -> None:
    suite = ArithSuite(depth=(2, 6))
    assert suite.generate(20, seed=7) == suite.generate(20, seed=7)
    assert suite.generate(20, seed=7) != suite.generate(20, seed=8)
    assert ArithSuite().generate(0) == []


def test_gold_answers_are_right_and_pass_while_wrong_ones_fail() -> None:
    suite = ArithSuite(depth=(1, 8), max_operand=12, ops="+-*/")
    for seed in range(40):
        for task in suite.generate(10, seed=seed):
            assert task.answer == str(_replay(task))
            assert len(task.metadata["steps"]) == task.metadata["depth"]
            assert task.question.count(".") >= task.metadata["depth"]
            assert "Answer:" in task.question
            gold = int(task.answer)
            assert suite.check(task, f"Let me compute.\nAnswer: {gold}")
            assert suite.check(task, f"**Answer:** {gold}.0")
            assert not suite.check(task, f"Answer: {gold + 1}")
            assert not suite.check(task, f"Answer: {gold}\nWait, no.\nAnswer: {gold - 1}")
            assert suite.verifier(task)(f"Answer: {gold}")


def test_question_reads_as_a_chain() -> None:
    task = ArithSuite(depth=3).generate(1, seed=0)[0]
    assert task.question.startswith(f"Start with {task.metadata['start']}.")
    assert "What is the result?" in task.question


def test_difficulty_grows_with_depth_and_varies_over_a_range() -> None:
    shallow = ArithSuite(depth=2).generate(5)
    deep = ArithSuite(depth=9).generate(5)
    assert {t.difficulty for t in shallow} == {0.2}
    assert {t.difficulty for t in deep} == {0.9}
    assert ArithSuite(depth=30).generate(1)[0].difficulty == 1.0
    mixed = {t.difficulty for t in ArithSuite(depth=(1, 10)).generate(50)}
    assert len(mixed) > 5


def test_division_only_when_exact_and_not_alone() -> None:
    tasks = ArithSuite(depth=6, ops="*/").generate(50, seed=3)
    assert any(op == "/" for t in tasks for op, _ in t.metadata["steps"])
    with pytest.raises(ConfigError, match="ops"):
        ArithSuite(ops="/")


@given(st.one_of(st.integers(-10**6, 10**6), st.integers(-10**40, 10**40)),
       st.integers(2, 2000))
def test_divisors_are_those_a_scan_finds(value: int, limit: int) -> None:
    scan = [d for d in range(2, limit + 1) if value and value % d == 0]
    assert ArithSuite.divisors(value, limit) == scan


def test_divisors_are_searched_for_division_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def counting(value: int, limit: int) -> list[int]:
        asked.append(value)
        return [d for d in range(2, limit + 1) if value and value % d == 0]

    monkeypatch.setattr(ArithSuite, "divisors", staticmethod(counting))
    ArithSuite(depth=8, max_operand=1_000_000).generate(20)
    assert asked == []
    tasks = ArithSuite(depth=8, ops="+/").generate(20)
    # Asked once per '/' drawn, including those that found none and became a '+'.
    assert len(asked) >= sum(op == "/" for t in tasks for op, _ in t.metadata["steps"]) > 0


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"depth": 0}, "depth"), ({"depth": (5, 2)}, "depth"), ({"depth": "3"}, "depth"),
        ({"depth": 51}, "depth"), ({"max_operand": 1}, "max_operand"),
        ({"max_operand": 1_000_001}, "max_operand must be an integer from 2 to 1000000"),
        ({"max_operand": True}, "max_operand"), ({"ops": "x"}, "ops"),
        ({"ops": ""}, "ops"), ({"ops": "++"}, "ops"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_parameter(
    params: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        ArithSuite(**params)  # type: ignore[arg-type]


def test_bad_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="n must be"):
        ArithSuite().generate(-1)
