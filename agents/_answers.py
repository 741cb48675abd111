"""The one rule for "these two answers are the same": used by checkers and by voting.

:func:`answer_key` maps an answer to its canonical form; two answers match exactly when their
keys are equal, so a majority vote that groups candidates by key and a checker that calls
:func:`answers_match` can never disagree on which answers are the same one.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["answer_key", "answers_match", "normalize_answer", "parse_number"]

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


def answer_key(text: str) -> str:
    """The canonical form of an answer: equal keys means the answers match.

    A number written in digits (anything :func:`parse_number` reads) becomes its exact value
    in lowest terms (``42``, ``42.0``, ``+42`` and ``84/2`` give ``'42'``; ``0.75`` gives
    ``'3/4'``); any other text becomes its :func:`normalize_answer` form. No text key can equal
    a number key, because a text whose normal form reads as a number is a number.

    Example:
        >>> answer_key("42.0"), answer_key(" 42 "), answer_key('"Paris".')
        ('42', '42', 'paris')
    """
    number = parse_number(text)
    return normalize_answer(text) if number is None else str(number)


def answers_match(answer: str, gold: str) -> bool:
    """Whether ``answer`` equals ``gold``: the same :func:`answer_key`.

    When both are numbers the comparison is numeric and exact (``42``, ``42.0`` and
    ``+42`` all match ``42``; ``forty-two`` does not); otherwise the two are compared by
    :func:`normalize_answer`.

    Example:
        >>> answers_match("42.0", "42"), answers_match("Paris.", "paris")
        (True, True)
    """
    return answer_key(answer) == answer_key(gold)
