"""Rebuild ``words_en.txt``, the word list behind the ``words`` suite (a maintainer's tool).

Run ``python -m stratagem.tasks._build_words`` with the two source packages installed
(``pip install pyspellchecker english-words``; neither is a dependency of stratagem). Nothing
here runs when stratagem is imported.

Sources (both MIT-licensed packages):

* ``pyspellchecker``'s English frequency dictionary (counts from OpenSubtitles, cleaned by its
  author) gives the candidates and their order, most frequent first;
* ``english-words``' ``web2`` list (Webster's Second International, public domain) vouches
  that a candidate is a dictionary word, and flags proper nouns (entries only capitalised).

A candidate among the :data:`TOP` most frequent is kept when ``web2`` has it in lower case, or
has a regular stem of it that is itself a candidate (``cats`` -> ``cat``, ``tried`` -> ``try``);
it is dropped when ``web2`` knows it only as a name. Words ``web2`` does not know at all (modern
words such as ``email``, irregular forms such as ``women``) are kept only among the
:data:`TOP_UNVOUCHED` most frequent, where nearly all are real words (a few modern first names
such as ``ryan`` slip through). A few slurs are left out.
"""

from __future__ import annotations

import gzip
import json
import pickle
from importlib.metadata import distribution
from pathlib import Path

__all__: list[str] = []

TOP = 40_000
"""How many of the most frequent candidates are considered."""
TOP_UNVOUCHED = 10_000
"""Candidates unknown to ``web2`` are kept only within this many of the most frequent."""

_SUFFIXES = (
    ("ies", "y"), ("ied", "y"), ("ier", "y"), ("iest", "y"), ("ily", "y"),
    ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"),
    ("er", ""), ("er", "e"), ("est", ""), ("est", "e"), ("ly", ""), ("ness", ""),
)
# Slurs are real words, but a shipped list has no need of them.
_LEFT_OUT = frozenset({
    "chink", "chinks", "fag", "faggot", "faggots", "fags", "gook", "gooks", "kike", "kikes",
    "nigga", "niggas", "nigger", "niggers", "retard", "retards", "spic", "spics", "tranny",
    "wetback", "wetbacks",
})

OUTPUT = Path(__file__).with_name("words_en.txt")
HEADER = """\
# English words for stratagem's `words` suite, most frequent first, one per line.
# Built by `python -m stratagem.tasks._build_words` from pyspellchecker {spell} (MIT; word
# frequencies from OpenSubtitles) filtered by the public-domain Webster's 2nd `web2` list from
# english-words {ew} (MIT). See that module's docstring for the rules.
"""


def _stems(word: str) -> list[str]:
    out = []
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            stem = word[: -len(suffix)] + replacement
            out.append(stem)
            if not replacement and len(stem) >= 3 and stem[-1] == stem[-2]:
                out.append(stem[:-1])  # "running" -> "runn" -> "run"
    return out


def build() -> list[str]:
    """The word list, most frequent first."""
    spell = distribution("pyspellchecker")
    counts: dict[str, int] = json.loads(
        gzip.decompress(Path(str(spell.locate_file("spellchecker/resources/en.json.gz")))
                        .read_bytes())
    )
    ew = distribution("english-words")
    web2_path = Path(str(ew.locate_file("english_words/data/web2.pickle")))
    web2: set[str] = pickle.loads(web2_path.read_bytes())
    lower = {w for w in web2 if w.islower()}
    names = {w.lower() for w in web2 if w[:1].isupper()}

    ranked = sorted(
        ((w, c) for w, c in counts.items() if w.isascii() and w.isalpha() and w.islower()
         and len(w) >= 2),
        key=lambda wc: (-wc[1], wc[0]),
    )[:TOP]
    # A stem vouches only when it is itself a frequent word: "leads" -> "lead" does, but
    # "paris" -> "pari" (an obscure web2 entry) does not.
    frequent = {w for w, _ in ranked}
    words = []
    for rank, (word, _) in enumerate(ranked):
        if word in _LEFT_OUT:
            continue
        vouched = word in lower or any(s in lower and s in frequent for s in _stems(word))
        if vouched or (word not in names and rank < TOP_UNVOUCHED):
            words.append(word)
    return words


def main() -> None:
    """Write ``words_en.txt`` next to this module."""
    words = build()
    header = HEADER.format(
        spell=distribution("pyspellchecker").version, ew=distribution("english-words").version
    )
    OUTPUT.write_text(header + "\n".join(words) + "\n", encoding="utf-8")
    print(f"wrote {len(words)} words to {OUTPUT}")


if __name__ == "__main__":
    main()
