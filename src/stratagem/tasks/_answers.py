"""Comparing a model's answer with a gold one: normalisation and exact numbers."""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["answers_match", "normalize_answer", "parse_number"]

_QUOTES = "\"'`“”‘’«»"
_TRAILING = ".,;:!?"
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(/\d+)?")


def normalize_answer(text: str) -> str:
    """``text`` in the form exact answers are compared in.

    Surrounding whitespace and quotes and trailing punctuation are removed, runs of whitespace
    become one space, and case is folded.

    Example:
        >>> normalize_answer('  "New   York." ')
        'new york'
    """
    previous = None
    text = " ".join(text.split()).casefold()
    while text != previous:  # '"yes".' -> '"yes"' -> 'yes'
        previous = text
        text = text.strip().strip(_QUOTES).rstrip(_TRAILING)
    return text


def parse_number(text: str) -> Fraction | None:
    """The exact value of a number written in digits, or ``None`` when ``text`` is not one.

    Integers, decimals, scientific notation, fractions (``3/4``) and thousands separators
    (``1,000``) are understood; number words (``forty-two``) are not.

    Example:
        >>> parse_number("42.0") == parse_number("42")
        True
    """
    text = normalize_answer(text)
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):  # "1/0"
        return None


def answers_match(answer: str, gold: str) -> bool:
    """Whether ``answer`` equals ``gold`` after normalisation.

    When ``gold`` is a number the comparison is numeric and exact (``42``, ``42.0`` and
    ``+42`` all match ``42``; ``forty-two`` does not); otherwise the two are compared by
    :func:`normalize_answer`.

    Example:
        >>> answers_match("42.0", "42"), answers_match("Paris.", "paris")
        (True, True)
    """
    gold_number = parse_number(gold)
    if gold_number is not None:
        return parse_number(answer) == gold_number
    return normalize_answer(answer) == normalize_answer(gold)
