"""Answer normalisation and exact numeric comparison."""

from __future__ import annotations

from fractions import Fraction

import pytest

from stratagem.tasks import answers_match, normalize_answer, parse_number


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Paris ", "paris"),
        ('"New   York."', "new york"),
        ("“yes”!", "yes"),
        ("'no'.", "no"),
        ("A\tB\nC", "a b c"),
        ("", ""),
    ],
)
def test_normalize(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", Fraction(42)), ("42.0", Fraction(42)), ("+42", Fraction(42)),
        ("-3.5", Fraction(-7, 2)), ("1,000", Fraction(1000)), ("3/4", Fraction(3, 4)),
        ("1e3", Fraction(1000)), ("42.", Fraction(42)),
        ("forty-two", None), ("4 2", None), ("1/0", None), ("12,34", None), ("", None),
    ],
)
def test_parse_number(text: str, value: Fraction | None) -> None:
    assert parse_number(text) == value


def test_numbers_compare_numerically_and_words_by_normal_form() -> None:
    assert answers_match("42.0", "42")
    assert answers_match("42", "42.00")
    assert not answers_match("forty-two", "42")
    assert not answers_match("42.1", "42")
    assert not answers_match("", "42")
    assert answers_match("  'PARIS'. ", "Paris")
    assert not answers_match("Paris, France", "Paris")
