"""Suites draw distinct questions while the pool allows, and say so when it does not.

The ``words`` suite once drew letters with replacement: 16 tasks of 14 letters held only 9
distinct questions, so with the same seeds a table's n overstated what was measured.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from stratagem.tasks import get_suite

QUICKSTART_LETTERS = "bcdfghlmnprstw"


def _repeated(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "tasks.repeated"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_any_length_words_draw_every_letter_once_before_any_twice(seed: int) -> None:
    suite = get_suite("words", length="any", letters=QUICKSTART_LETTERS)
    with capture_logs() as logs:
        tasks = suite.generate(14, seed=seed)
    assert sorted(str(t.metadata["letter"]) for t in tasks) == sorted(QUICKSTART_LETTERS)
    assert not _repeated(logs)


def test_more_tasks_than_questions_repeat_in_rounds_and_warn() -> None:
    suite = get_suite("words", length="any", letters=QUICKSTART_LETTERS)
    with capture_logs() as logs:
        tasks = suite.generate(30, seed=0)
    letters = [str(t.metadata["letter"]) for t in tasks]
    assert sorted(letters[:14]) == sorted(letters[14:28]) == sorted(QUICKSTART_LETTERS)
    (warning,) = _repeated(logs)
    assert warning["n"] == 30 and warning["distinct"] == 14
    assert warning["log_level"] == "warning"


def test_words_with_a_length_draw_distinct_letter_length_pairs() -> None:
    suite = get_suite("words", length=(3, 4), letters="bcdm")
    with capture_logs() as logs:
        tasks = suite.generate(8, seed=3)
    pairs = [(t.metadata["letter"], t.metadata["length"]) for t in tasks]
    assert len(set(pairs)) == 8 and not _repeated(logs)
    with capture_logs() as logs:
        suite.generate(9, seed=3)
    assert _repeated(logs)


def test_the_draw_is_still_seeded() -> None:
    suite = get_suite("words", length="any")
    assert suite.generate(10, seed=4) == suite.generate(10, seed=4)
    assert suite.generate(10, seed=4) != suite.generate(10, seed=5)


@pytest.mark.parametrize(("name", "params"), [
    ("arith", {"depth": 1, "max_operand": 3, "ops": "+"}),   # 9 distinct questions
    ("connectivity", {"nodes": 4, "path_length": 1, "edges": 2}),
])
def test_generated_suites_redraw_a_repeated_question(name: str, params: dict[str, object]
                                                     ) -> None:
    suite = get_suite(name, **params)
    with capture_logs() as logs:
        tasks = suite.generate(6, seed=0)
    assert len({t.question for t in tasks}) == 6
    assert not _repeated(logs)


def test_a_tiny_arith_space_warns_once_it_is_exhausted() -> None:
    suite = get_suite("arith", depth=1, max_operand=3, ops="+")
    with capture_logs() as logs:
        tasks = suite.generate(12, seed=0)
    assert len({t.question for t in tasks}) == 9
    (warning,) = _repeated(logs)
    assert warning["distinct"] == 9
