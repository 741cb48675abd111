"""User suites from JSONL: every checker type, and malformed lines named by number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratagem.errors import ConfigError
from stratagem.tasks import JsonlSuite, get_suite, load_jsonl_suite

GOOD = [
    "# capitals and sums",
    json.dumps({"id": "fr", "question": "Capital of France?", "answer": "Paris",
                "difficulty": 0.1, "metadata": {"topic": "geo"}}),
    "",
    json.dumps({"question": "6 * 7?", "answer": 42}),
    json.dumps({"id": "us", "question": "Capital of the USA?",
                "checker": {"type": "exact", "value": ["Washington", "Washington, D.C."]}}),
    json.dumps({"id": "sky", "question": "Colour of the sky?",
                "checker": {"type": "contains", "value": "blue"}}),
    json.dumps({"id": "km", "question": "How far?",
                "checker": {"type": "regex", "pattern": r"\d+ km", "ignore_case": True}}),
    json.dumps({"id": "pi", "question": "Pi to two places?",
                "checker": {"type": "number", "value": 3.14, "tolerance": 0.005}}),
    json.dumps({"id": "mc", "question": "Which? (A) x (B) y",
                "checker": {"type": "choice", "value": "B", "options": ["A", "B"]}}),
    "   # an indented comment",
]


def _write(tmp_path: Path, lines: list[str], name: str = "mine.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def suite(tmp_path: Path) -> JsonlSuite:
    return load_jsonl_suite(_write(tmp_path, GOOD))


def test_good_file_loads_in_order(suite: JsonlSuite) -> None:
    assert suite.name == "mine"
    assert [t.id for t in suite.tasks] == ["fr", "mine/4", "us", "sky", "km", "pi", "mc"]
    fr = suite.tasks[0]
    assert (fr.answer, fr.difficulty, fr.metadata) == ("Paris", 0.1, {"topic": "geo"})
    assert suite.tasks[1].answer == "42"
    assert suite.tasks[2].answer == "Washington"
    assert suite.tasks[3].answer is None
    assert {t.suite for t in suite.tasks} == {"mine"}


def test_generate_is_a_seeded_sample(suite: JsonlSuite) -> None:
    assert suite.generate(4, seed=1) == suite.generate(4, seed=1)
    assert {t.id for t in suite.generate(7, seed=2)} == {t.id for t in suite.tasks}
    with pytest.raises(ConfigError, match="only 7"):
        suite.generate(8)


@pytest.mark.parametrize(
    ("task_id", "passing", "failing"),
    [
        ("fr", ["Answer: paris.", "**Answer:** \"Paris\""], ["Answer: Lyon", "Paris is it"]),
        ("mine/4", ["Answer: 42", "Answer: 42.0"], ["Answer: forty-two", "Answer: 41"]),
        ("us", ["Answer: washington, d.c.", "Answer: Washington"], ["Answer: New York"]),
        ("sky", ["Answer: Light blue."], ["Answer: grey"]),
        ("km", ["Answer: 12 KM"], ["Answer: about 12 km", "Answer: 12 miles"]),
        ("pi", ["Answer: 3.14", "Answer: 3.1416"], ["Answer: 3.15", "Answer: pi"]),
        ("mc", ["Answer: B", "Answer: (b)", "Answer: B) y", "Answer: Option B"],
         ["Answer: A", "Answer: Because"]),
    ],
)
def test_checkers(suite: JsonlSuite, task_id: str, passing: list[str],
                  failing: list[str]) -> None:
    task = next(t for t in suite.tasks if t.id == task_id)
    for reply in passing:
        assert suite.check(task, reply), reply
    for reply in failing:
        assert not suite.check(task, reply), reply


def test_get_suite_and_name(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    assert len(get_suite("jsonl", path=str(path)).tasks) == 7  # type: ignore[attr-defined]
    assert JsonlSuite(path, name="custom").tasks[0].suite == "custom"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"question": "q", "answer": "a"', "invalid JSON"),
        ('["question", "answer"]', "expected a JSON object"),
        ('{"answer": "a"}', "missing 'question'"),
        ('{"question": "  ", "answer": "a"}', "missing 'question'"),
        ('{"question": "q"}', "exactly one of 'answer'"),
        ('{"question": "q", "answer": "a", "checker": {"type": "exact", "value": "a"}}',
         "exactly one of 'answer'"),
        ('{"question": "q", "answer": ""}', "'answer' must be"),
        ('{"question": "q", "answer": "a", "anwser": "a"}', "unknown field"),
        ('{"question": "q", "checker": {"type": "fuzzy"}}', "checker type must be one of"),
        ('{"question": "q", "checker": "exact"}', "'checker' must be an object"),
        ('{"question": "q", "checker": {"type": "regex", "pattern": "("}}', "invalid pattern"),
        ('{"question": "q", "checker": {"type": "regex"}}', "missing \\['pattern'\\]"),
        ('{"question": "q", "checker": {"type": "number", "value": "x"}}', "must be a number"),
        ('{"question": "q", "checker": {"type": "number", "value": 1, "tolerance": -1}}',
         "tolerance"),
        ('{"question": "q", "checker": {"type": "exact", "value": "a", "extra": 1}}',
         "unknown keys"),
        ('{"question": "q", "checker": {"type": "choice", "value": "E", "options": ["A"]}}',
         "not one of the options"),
        ('{"question": "q", "answer": "a", "difficulty": 2}', "'difficulty'"),
        ('{"question": "q", "answer": "a", "id": 7}', "'id' must be"),
        ('{"question": "q", "answer": "a", "metadata": []}', "'metadata'"),
        ('{"id": "fr", "question": "q", "answer": "a"}', "duplicate id 'fr' \\(first on line 2\\)"),
    ],
)
def test_malformed_line_is_named_by_number(tmp_path: Path, bad: str, message: str) -> None:
    lines = [*GOOD[:4], bad, *GOOD[4:]]  # the bad line is line 5
    path = _write(tmp_path, lines)
    with pytest.raises(ConfigError, match=message) as caught:
        load_jsonl_suite(path)
    assert str(caught.value).startswith(f"{path}:5: ")


def test_unreadable_or_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read task file"):
        load_jsonl_suite(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="no tasks"):
        load_jsonl_suite(_write(tmp_path, ["# only a comment", ""]))


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_text('\ufeff{"question": "q", "answer": "a"}\n', encoding="utf-8")
    assert load_jsonl_suite(path).tasks[0].answer == "a"
