"""``words``: "a word that starts with 'b' and has 4 letters" (a tiny model sometimes can)."""

from __future__ import annotations

import math
import random
import string
from functools import cache
from importlib.resources import files
from typing import Literal

from stratagem.agents import extract_answer
from stratagem.errors import ConfigError
from stratagem.tasks._task import ANSWER_LINE, IntRange, Suite, Task, check_count, int_range

__all__ = ["WordsSuite", "english_words"]

MIN_LENGTH, MAX_LENGTH = 2, 12
COMMON = 10_000
"""The most frequent words of the list: the ones difficulty is measured against."""
_STRIP = string.punctuation + string.whitespace + "“”‘’«»"


@cache
def _ranked() -> tuple[str, ...]:
    text = files("stratagem.tasks").joinpath("words_en.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))


@cache
def english_words() -> frozenset[str]:
    """The words the ``words`` checker accepts: about 35,000 lower-case English words.

    The list ships with stratagem (``words_en.txt``). It was built from pyspellchecker's
    frequency dictionary filtered by the public-domain Webster's 2nd word list: common words
    with their inflections (``cats``, ``tried``), modern words (``email``), no names known as
    such; see ``stratagem.tasks._build_words``.
    """
    return frozenset(_ranked())


@cache
def _common_counts() -> dict[tuple[str, int], list[str]]:
    """Common words by (first letter, length), most frequent first."""
    table: dict[tuple[str, int], list[str]] = {}
    for word in _ranked()[:COMMON]:
        table.setdefault((word[0], len(word)), []).append(word)
    return table


@cache
def _most_common() -> int:
    return max(
        len(words) for (_, length), words in _common_counts().items()
        if MIN_LENGTH <= length <= MAX_LENGTH
    )


def _difficulty(count: int) -> float:
    """1 when no common word fits, 0 for the (letter, length) with the most; log-scaled."""
    return round(1.0 - math.log1p(count) / math.log1p(_most_common()), 4)


@cache
def _words_by_letter() -> dict[str, int]:
    """Common words (of 2 to 12 letters) per first letter."""
    counts: dict[str, int] = {}
    for (letter, _length), words in _common_counts().items():
        counts[letter] = counts.get(letter, 0) + len(words)
    return counts


class WordsSuite(Suite):
    """Word constraints: "Write one English word that starts with the letter 'b' and has
    exactly 4 letters."

    Each task draws a length, then a first letter uniformly among those that start at least
    one common word of that length (so rare letters come up as often as frequent ones). The
    checker accepts any word of :func:`english_words` with that letter and length; the task's
    ``answer`` is one example (the most frequent). Difficulty falls with the number of common
    words that fit, ``n``: ``1 - log(1 + n) / log(1 + n_max)``, where ``n_max`` is the count for
    the easiest (letter, length) pair (``s`` and 6 letters). So rare letters, and lengths far
    from 5 to 8, are harder.

    Args:
        length: The word length, or an inclusive ``(min, max)`` range drawn from per task;
            from 2 to 12. ``"any"`` drops the length constraint ("a word that starts with
            'b'"): the easiest form, one the embedded 135M model sometimes gets right.
        letters: The first letters to draw from (default: a to z).

    Raises:
        ConfigError: ``length`` is out of range.

    Example:
        >>> task = WordsSuite(length=4).generate(1, seed=3)[0]
        >>> WordsSuite().check(task, f"Answer: {task.answer}")
        True
    """

    name = "words"

    def __init__(self, length: IntRange | Literal["any"] = (3, 6),
                 letters: str = string.ascii_lowercase) -> None:
        pool = sorted({c for c in str(letters).lower() if c in string.ascii_lowercase})
        if not pool:
            raise ConfigError(f"letters={letters!r} has no letter a-z: give e.g. "
                              "letters = \"bcdfmst\"")
        self.letters = "".join(pool)
        self.any_length = length == "any"
        self.length = (MIN_LENGTH, MAX_LENGTH) if self.any_length else int_range(
            "length", length, low=MIN_LENGTH, high=MAX_LENGTH)

    def generate(self, n: int, *, seed: int = 0) -> list[Task]:
        """``n`` constraints (see :meth:`Suite.generate`)."""
        rng = random.Random(f"words:{seed}")
        table = _common_counts()
        tasks = []
        by_letter = _words_by_letter()
        most = max(by_letter.values())
        for i in range(check_count(n)):
            if self.any_length:
                letter = rng.choice([c for c in sorted(by_letter) if c in self.letters])
                # The most frequent fitting word (a frozenset's order changes per process).
                gold = next(w for w in _ranked() if w.startswith(letter)
                            and MIN_LENGTH <= len(w) <= MAX_LENGTH)
                tasks.append(Task(
                    id=f"{self.name}/{seed}/{i}", suite=self.name,
                    question=f"Write one English word that starts with the letter '{letter}'. "
                             f"{ANSWER_LINE}",
                    answer=gold,
                    difficulty=round(1 - math.log1p(by_letter[letter]) / math.log1p(most), 4),
                    metadata={"letter": letter, "length": None,
                              "common_words": by_letter[letter]},
                ))
                continue
            length = rng.randint(*self.length)
            letters = [c for c in self.letters if (c, length) in table]
            if not letters:
                raise ConfigError(f"no common word of {length} letters starts with any of "
                                  f"{self.letters!r}: widen letters or length")
            letter = rng.choice(letters)
            fitting = table[(letter, length)]
            tasks.append(Task(
                id=f"{self.name}/{seed}/{i}", suite=self.name,
                question=(
                    f"Write one English word that starts with the letter '{letter}' and has "
                    f"exactly {length} letters. {ANSWER_LINE}"
                ),
                answer=fitting[0], difficulty=_difficulty(len(fitting)),
                metadata={"letter": letter, "length": length, "common_words": len(fitting)},
            ))
        return tasks

    def check(self, task: Task, response: str) -> bool:
        """The extracted answer, stripped of quotes and punctuation and lower-cased, is one
        word of :func:`english_words` with the task's first letter and exact length."""
        word = extract_answer(response).strip(_STRIP).casefold()
        letter, length = task.metadata.get("letter"), task.metadata.get("length")
        return (
            word in english_words() and (length is None or len(word) == length)
            and isinstance(letter, str) and word.startswith(letter)
        )
