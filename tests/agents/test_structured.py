"""Structured output: lenient JSON extraction, one repair attempt, every attempt charged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from stratagem.agents import (
    ModelClient,
    PromptTemplate,
    RoleOutput,
    Structured,
    complete_structured,
    extract_json,
    parse_error_completions,
)
from stratagem.errors import OutputParseError
from stratagem.testing import ScriptedModel

ASK = [{"role": "user", "content": "Give me a point."}]


class Point(BaseModel):
    x: int
    y: int = 0


def _ask(client: ModelClient, **kw: Any) -> Structured[Point]:
    return asyncio.run(
        complete_structured(client, ASK, Point, role="planner", node="plan", max_output=64, **kw)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"x": 1}', {"x": 1}),
        ('Sure! Here it is:\n```json\n{"x": 1, "y": 2}\n```\nHope that helps.', {"x": 1, "y": 2}),
        ('{"x": 1, "y": 2,}', {"x": 1, "y": 2}),
        ("{“x”: 3}", {"x": 3}),
        ('I think {not json} but {"x": 4} and {"x": 5}', {"x": 4}),
        ('{"x": {"nested": [1, {"a": 2}]}}', {"x": {"nested": [1, {"a": 2}]}}),
    ],
)
def test_extract_json_finds_the_first_object(text: str, expected: dict[str, Any]) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", "[1, 2, 3]", '{"x": 1'])
def test_extract_json_without_an_object_raises(text: str) -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json(text)


def test_a_good_reply_takes_one_call() -> None:
    with ScriptedModel(['```json\n{"x": 1, "y": 2}\n```']) as model:
        client = ModelClient(model)
        result = _ask(client)
    assert result.value == Point(x=1, y=2)
    assert not result.repaired
    assert len(client.ledger) == 1
    assert result.billed_tokens == client.ledger.totals().total_tokens


def test_a_bad_reply_is_repaired_and_both_calls_stay_charged() -> None:
    with ScriptedModel(['{"y": 2}', 'Fixed: {"x": 7, "y": 2}']) as model:
        client = ModelClient(model)
        result = _ask(client)
    assert result.value == Point(x=7, y=2)
    assert result.repaired
    rows = client.ledger.entries()
    assert len(rows) == 2
    assert all(r.status == "ok" and r.role == "planner" and r.node == "plan" for r in rows)
    assert all(r.total_tokens > 0 for r in rows)
    assert client.ledger.totals().total_tokens == sum(r.total_tokens for r in rows)
    assert result.billed_tokens == client.ledger.totals().total_tokens
    assert rows[0].labels.get("repair") is None
    assert rows[1].labels["repair"] == "1"
    # The repair call sees the original conversation, its own reply, then the error.
    sent = model.requests[1].messages
    assert sent[0] == ASK[0]
    assert sent[1] == {"role": "assistant", "content": '{"y": 2}'}
    assert sent[2]["role"] == "user"
    assert "x: Field required" in sent[2]["content"]
    assert '"x", "y"' in sent[2]["content"]


def test_two_bad_replies_raise_with_both_calls_charged() -> None:
    with ScriptedModel(["no idea", "still no idea"]) as model:
        client = ModelClient(model)
        with pytest.raises(OutputParseError, match="planner") as info:
            _ask(client)
    assert "no JSON object" in str(info.value)
    assert len(client.ledger) == 2
    completions = parse_error_completions(info.value)
    assert [c.text for c in completions] == ["no idea", "still no idea"]
    assert sum(c.billed_tokens for c in completions) == client.ledger.totals().total_tokens > 0


def test_a_custom_parser_replaces_json_and_its_value_error_triggers_the_repair() -> None:
    def parse(text: str) -> Point:
        if "X=" not in text:
            raise ValueError("no 'X=' line")
        return Point(x=int(text.split("X=")[1]))

    with ScriptedModel(["hmm", "X=5"]) as model:
        client = ModelClient(model)
        result = _ask(client, parse=parse, format_hint="the line X=<number>")
    assert result.value.x == 5
    repair = model.requests[1].messages[-1]["content"]
    assert "no 'X=' line" in repair
    assert "the line X=<number>" in repair


def test_call_options_and_labels_reach_both_calls() -> None:
    custom = PromptTemplate(system="", user="FIX {error} AS {format}")
    with ScriptedModel(["?", '{"x": 1}']) as model:
        client = ModelClient(model)
        _ask(client, temperature=0.3, seed=11, labels={"task": "t1"}, branch="b0",
             repair_prompt=custom)
    assert [r.temperature for r in model.requests] == [0.3, 0.3]
    assert [r.seed for r in model.requests] == [11, 11]
    assert model.requests[1].messages[-1]["content"].startswith("FIX ")
    rows = client.ledger.entries()
    assert [r.branch for r in rows] == ["b0", "b0"]
    assert rows[0].labels == {"task": "t1"}
    assert rows[1].labels == {"task": "t1", "repair": "1"}


def test_a_truncated_reply_is_told_to_be_shorter() -> None:
    with ScriptedModel(['{"x": 1, "y": ' + "2" * 400 + "}", '{"x": 1}']) as model:
        client = ModelClient(model)
        assert _ask(client).value == Point(x=1)
    assert "be shorter" in model.requests[1].messages[-1]["content"]


class Tagged(RoleOutput):
    x: int


def test_role_outputs_are_linked_to_the_accepted_call_only() -> None:
    with ScriptedModel(['{"x": "a", "_call_ids": ["forged"]}', '{"x": 2}']) as model:
        client = ModelClient(model)
        result = asyncio.run(complete_structured(client, ASK, Tagged, role="judge",
                                                 max_output=32))
    first, second = client.ledger.entries()
    assert result.value.call_ids == (second.call_id,) != (first.call_id,)
    assert result.value.model_dump() == {"x": 2}
    assert Tagged(x=1).call_ids == ()


def test_parse_error_completions_is_empty_for_a_plain_error() -> None:
    assert parse_error_completions(OutputParseError("x")) == ()
