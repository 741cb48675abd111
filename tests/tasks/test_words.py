"""The word-constraint suite: a fair checker over a shipped list of common English words."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stratagem.errors import ConfigError
from stratagem.tasks import Task, WordsSuite, english_words, get_suite


def _task(letter: str, length: int) -> Task:
    return Task(id="w", suite="words", question="?", answer=None,
                metadata={"letter": letter, "length": length})


def test_word_list_is_common_english() -> None:
    words = english_words()
    assert 20_000 < len(words) < 60_000
    for word in ("the", "bank", "cats", "running", "tried", "women", "email", "zebra", "quiz"):
        assert word in words, word
    for junk in ("asdf", "zzz", "qwerty", "john", "french", "paris"):
        assert junk not in words, junk
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)


@pytest.mark.parametrize(
    ("letter", "length", "reply"),
    [
        ("b", 4, "Answer: bank"), ("b", 4, "**Answer:** 'Bank'."), ("c", 4, "Answer: cats"),
        ("b", 4, 'I choose this one.\nAnswer: "BOOK"'), ("z", 5, "Answer: zebra"),
        ("q", 4, "quiz"),
    ],
)
def test_accepts_real_words_with_the_letter_and_length(letter: str, length: int,
                                                       reply: str) -> None:
    assert WordsSuite().check(_task(letter, length), reply)


@pytest.mark.parametrize(
    "reply",
    [
        "Answer: bxzq",  # not a word
        "Answer: banks",  # wrong length
        "Answer: cash",  # wrong letter
        "Answer: big cat",  # not one word
        "Answer: bank1",
        "Answer: ",
        "Answer: bank\nActually:\nAnswer: bqqz",  # the last answer counts
    ],
)
def test_rejects_non_words_wrong_length_or_letter(reply: str) -> None:
    assert not WordsSuite().check(_task("b", 4), reply)


def test_generated_tasks_are_deterministic_solvable_and_labelled() -> None:
    suite = WordsSuite(length=(3, 8))
    tasks = suite.generate(300, seed=5)
    assert tasks == suite.generate(300, seed=5)
    assert tasks != suite.generate(300, seed=6)
    assert len({t.metadata["letter"] for t in tasks}) >= 20  # rare letters come up too
    for task in tasks:
        letter, length = task.metadata["letter"], task.metadata["length"]
        assert f"letter '{letter}'" in task.question
        assert f"exactly {length} letters" in task.question
        assert 3 <= length <= 8
        assert task.answer is not None and suite.check(task, f"Answer: {task.answer}")
        assert task.difficulty is not None and 0.0 <= task.difficulty <= 1.0
    # Monotone: fewer fitting common words, harder.
    by_count = sorted(tasks, key=lambda t: t.metadata["common_words"])
    difficulties = [t.difficulty for t in by_count]
    assert difficulties == sorted(difficulties, reverse=True)
    assert by_count[0].difficulty > by_count[-1].difficulty + 0.4


def test_rare_letters_are_harder_than_common_ones() -> None:
    tasks = WordsSuite(length=5).generate(400, seed=0)
    difficulty = {t.metadata["letter"]: t.difficulty for t in tasks}
    assert difficulty["s"] < difficulty["b"] < difficulty["q"]


@pytest.mark.parametrize("length", [1, 13, (6, 3), "4"])
def test_bad_length_is_a_config_error(length: object) -> None:
    with pytest.raises(ConfigError, match="length"):
        WordsSuite(length=length)  # type: ignore[arg-type]


def test_any_length_form_checks_letter_and_dictionary_only() -> None:
    suite = get_suite("words", length="any", letters="bst")
    tasks = suite.generate(30, seed=2)
    assert {t.metadata["letter"] for t in tasks} <= {"b", "s", "t"}
    assert all("exactly" not in t.question for t in tasks)
    task = next(t for t in tasks if t.metadata["letter"] == "b")
    assert suite.check(task, "Answer: banana") and suite.check(task, "Answer: be")
    assert not suite.check(task, "Answer: apple")      # wrong letter
    assert not suite.check(task, "Answer: bzzzkt")     # not a word
    assert all(suite.check(t, f"Answer: {t.answer}") for t in tasks)


def test_letters_must_contain_a_letter() -> None:
    with pytest.raises(ConfigError, match="letters"):
        get_suite("words", letters="123")


def test_any_length_words_have_the_same_gold_answer_in_every_process() -> None:
    # The gold answer once came from a frozenset's order, which string hashing reshuffles
    # per process: few-shot prompts built from it changed between a run and its resume.
    script = ("from stratagem.tasks import get_suite;"
              "print([t.answer for t in get_suite('words', length='any').generate(8)])")
    outputs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    tasks = get_suite("words", length="any").generate(8)
    assert all(t.answer and t.answer.startswith(t.metadata["letter"]) for t in tasks)
    firsts = get_suite("words", length="any", letters="abc").generate(3)
    assert [t.answer for t in firsts if t.metadata["letter"] == "b"] == ["be"]
