"""``words``: "a word that starts with 'b' and has 4 letters" (a tiny model sometimes can)."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from typing import Literal

from stratagem.agents import extract_answer
from stratagem.errors import ConfigError
from stratagem.tasks._task import (
    ANSWER_LINE,
    IntRange,
    Suite,
    Task,
    check_count,
    int_range,
    warn_repeated,
)

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
    one common word of that length (so rare letters come up as often as frequent ones),
    without replacement: no question repeats until every one has been drawn. The
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
        """``n`` distinct constraints while the pool allows (see :meth:`Suite.generate`).

        Questions are drawn without replacement: every (letter) or (letter, length) pair
        comes up once before any comes up twice. Asking for more than :meth:`distinct`
        repeats questions (the same seed then gives the same outputs, so the repeats add
        runs but no information) and logs a ``tasks.repeated`` warning.
        """
        n = check_count(n)
        pool = self.distinct()
        if n > pool:
            warn_repeated(self.name, n, pool)
        keys = self._keys(random.Random(f"words:{seed}"))
        return [self._task(next(keys), f"{self.name}/{seed}/{i}") for i in range(n)]

    def distinct(self) -> int:
        """How many distinct questions the suite's parameters allow."""
        return len(self._pool())

    def _pool(self) -> list[tuple[str, int | None]]:
        if self.any_length:
            return [(c, None) for c in sorted(_words_by_letter()) if c in self.letters]
        table = _common_counts()
        return [(c, length) for length in range(self.length[0], self.length[1] + 1)
                for c in self.letters if (c, length) in table]

    def _keys(self, rng: random.Random) -> Iterator[tuple[str, int | None]]:
        """(letter, length) pairs in rounds without replacement: any-length tasks draw a
        letter uniformly among those left; others draw a length uniformly among those with
        a letter left, then a letter (so rare letters come up as often as frequent ones)."""
        pool = self._pool()
        if not pool:
            raise ConfigError(f"no common word of {self.length[0]} to {self.length[1]} "
                              f"letters starts with any of {self.letters!r}: widen letters "
                              "or length")
        while True:
            left = list(pool)
            while left:
                lengths = sorted({length or 0 for _, length in left})
                length = rng.choice(lengths)
                letters = [key for key in left if (key[1] or 0) == length]
                key = rng.choice(letters)
                left.remove(key)
                yield key

    def _task(self, key: tuple[str, int | None], task_id: str) -> Task:
        letter, length = key
        if length is None:
            by_letter = _words_by_letter()
            most = max(by_letter.values())
            # The most frequent fitting word (a frozenset's order changes per process).
            gold = next(w for w in _ranked() if w.startswith(letter)
                        and MIN_LENGTH <= len(w) <= MAX_LENGTH)
            return Task(
                id=task_id, suite=self.name,
                question=f"Write one English word that starts with the letter '{letter}'. "
                         f"{ANSWER_LINE}",
                answer=gold,
                difficulty=round(1 - math.log1p(by_letter[letter]) / math.log1p(most), 4),
                metadata={"letter": letter, "length": None,
                          "common_words": by_letter[letter]},
            )
        fitting = _common_counts()[(letter, length)]
        return Task(
            id=task_id, suite=self.name,
            question=(
                f"Write one English word that starts with the letter '{letter}' and has "
                f"exactly {length} letters. {ANSWER_LINE}"
            ),
            answer=fitting[0], difficulty=_difficulty(len(fitting)),
            metadata={"letter": letter, "length": length, "common_words": len(fitting)},
        )

    def _demonstration_candidates(self, seed: int) -> Iterator[Task]:
        # Every question once, in a seeded order: drawing more would only repeat them.
        keys = self._keys(random.Random(f"words-demonstrations:{seed}"))
        for i in range(self.distinct()):
            yield self._task(next(keys), f"{self.name}/demo{seed}/{i}")

    def check(self, task: Task, response: str) -> bool:
        """The extracted answer, stripped of quotes and punctuation and lower-cased, is one
        word of :func:`english_words` with the task's first letter and exact length."""
        word = extract_answer(response).strip(_STRIP).casefold()
        letter, length = task.metadata.get("letter"), task.metadata.get("length")
        return (
            word in english_words() and (length is None or len(word) == length)
            and isinstance(letter, str) and word.startswith(letter)
        )
