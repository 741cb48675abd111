"""Voting and checking share one rule: candidates fall in one vote group iff the checker says
their answers match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratagem.agents import extract_answer
from stratagem.graphs import majority_vote
from stratagem.tasks import (
    Suite,
    Task,
    answer_key,
    answers_match,
    get_suite,
    normalize_answer,
    parse_number,
)

SEEDS = (0, 1, 2, 3)

JSONL_ANSWERS = ["Paris", "42", "3/4", "New York", "1,000", "-2.5", "yes", "B", "0"]


def _variants(gold: str) -> list[str]:
    """Ways a reply can write ``gold`` (case, spacing, punctuation, quotes, emphasis, number
    forms) and near misses that must not match it."""
    out = [gold, gold.upper(), gold.title(), f"  {gold} ", f"{gold}.", f"{gold}!",
           f'"{gold}"', f"'{gold}'.", f"**{gold}**", f"“{gold}”", f"{gold}{gold}",
           f"not {gold}", f"The answer is {gold}."]
    number = parse_number(gold)
    if number is not None:
        out += [f"{gold}.0", f"{float(number)}", f"{number + 1}", f"{-number - 1}"]
        if number.denominator == 1:
            value = int(number)
            out += [f"{value}.00", f"{value:,}", f"{value * 2}/2", f"{value}e0"]
            if value >= 0:
                out.append(f"+{value}")
    return out


def _replies(variant: str) -> list[str]:
    """Full replies whose extracted answer is ``variant`` (or, for a bare sentence, what
    the checker extracts from it)."""
    return [f"Answer: {variant}", f"Let me think.\n\n**Answer:** {variant}", variant]


def _assert_vote_agrees_with_check(suite: Suite, task: Task) -> None:
    assert task.answer is not None
    gold_reply = f"Answer: {task.answer}"
    assert suite.check(task, gold_reply), task
    gold = extract_answer(gold_reply)
    for variant in _variants(task.answer):
        for reply in _replies(variant):
            answer = extract_answer(reply)
            matches = suite.check(task, reply)
            grouped = answer_key(answer) == answer_key(gold)
            assert grouped == matches, (task.id, task.answer, reply, answer)
            # The vote: with a lone other answer first, the variant wins iff it joins gold.
            other = {"answer": "an answer no checker accepts"}
            vote = majority_vote([other, {"answer": answer}, {"answer": gold}])
            assert vote == (1 if matches else 0), (task.id, reply)


@pytest.mark.parametrize(
    ("name", "params"),
    [("arith", {"depth": (1, 6)}), ("connectivity", {}), ("words", {})],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_built_in_suites(name: str, params: dict[str, object], seed: int) -> None:
    # humaneval is left out: its checker runs the code block, it does not compare answers.
    suite = get_suite(name, **params)
    for task in suite.generate(15, seed=seed):
        _assert_vote_agrees_with_check(suite, task)


@pytest.mark.parametrize("seed", SEEDS)
def test_jsonl_exact_answers(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(
        json.dumps({"question": f"Q{i}? Answer: ...", "answer": a})
        for i, a in enumerate(JSONL_ANSWERS)
    ))
    suite = get_suite("jsonl", path=str(path))
    for task in suite.generate(len(JSONL_ANSWERS), seed=seed):
        _assert_vote_agrees_with_check(suite, task)


def _old_answers_match(answer: str, gold: str) -> bool:
    """The checkers' rule before :func:`answer_key` existed (kept to prove it unchanged)."""
    gold_number = parse_number(gold)
    if gold_number is not None:
        return parse_number(answer) == gold_number
    return normalize_answer(answer) == normalize_answer(gold)


_pieces = st.sampled_from(["42", "42.0", "+42", "-3", "3/4", "0.75", "1,000", "1e3", "1/0",
                           "Paris", "paris", " ", ".", '"', "'", "!", ",", "x", "A", "é"])
_texts = st.lists(_pieces, max_size=4).map("".join) | st.text(max_size=12)


@given(_texts, _texts)
def test_key_equality_is_the_old_checker_rule(answer: str, gold: str) -> None:
    assert answers_match(answer, gold) == _old_answers_match(answer, gold)
    assert answers_match(answer, gold) == answers_match(gold, answer)


@pytest.mark.parametrize(
    ("text", "key"),
    [("42", "42"), ("42.0", "42"), ("+42", "42"), ("1,000", "1000"), ("0.75", "3/4"),
     ("3/4", "3/4"), ('"Paris".', "paris"), ("New  York", "new york"), ("1/0", "1/0"),
     ("", "")],
)
def test_answer_key(text: str, key: str) -> None:
    assert answer_key(text) == key


def test_graphs_normalize_answer_is_deprecated() -> None:
    from stratagem.graphs import normalize_answer as old

    with pytest.deprecated_call():
        assert old("42.0") == "42"
