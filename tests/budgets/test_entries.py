from __future__ import annotations

import pydantic
import pytest

from stratagem.budgets import LedgerEntry, Transfer, Usage


def test_entry_is_frozen_and_has_fresh_call_ids() -> None:
    a = LedgerEntry(role="solver", model="m")
    b = LedgerEntry(role="solver", model="m")
    assert a.call_id != b.call_id
    with pytest.raises(pydantic.ValidationError):
        a.role = "judge"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt_tokens": 10, "cached_tokens": 11}, "cached_tokens is a subset"),
        ({"completion_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens is a subset"),
        ({"prompt_tokens": -1}, "greater than or equal to 0"),
        ({"status": "exploded"}, "status"),
        ({"usage_source": "guess"}, "usage_source"),
        ({"attempt": 0}, "attempt"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_entry_rejects_impossible_rows(fields: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        LedgerEntry(role="solver", model="m", **fields)  # type: ignore[arg-type]


def test_unknown_detail_fields_stay_unknown() -> None:
    e = LedgerEntry(role="solver", model="m", prompt_tokens=7, completion_tokens=3)
    assert e.cached_tokens is None
    assert e.reasoning_tokens is None
    assert e.cost_usd is None
    assert e.total_tokens == 10


def test_from_usage_round_trips() -> None:
    usage = Usage(100, 40, cached_tokens=60, reasoning_tokens=30, source="estimate")
    e = LedgerEntry.from_usage(usage, role="judge", model="gpt-4o")
    assert e.usage == usage
    assert e.usage_source == "estimate"


def test_usage_subsets_are_enforced() -> None:
    with pytest.raises(ValueError, match="cached_tokens"):
        Usage(10, 5, cached_tokens=11)
    with pytest.raises(ValueError, match="reasoning_tokens"):
        Usage(10, 5, reasoning_tokens=6)
    assert Usage(10, 5, 10, 5).total_tokens == 15


def test_secrets_never_reach_a_row() -> None:
    key = "sk-proj-abcdefghijklmnop1234"
    e = LedgerEntry(
        role="solver",
        model="m",
        error=f"401 Incorrect API key provided: {key}",
        labels={"api_key": "whatever-it-is", "note": f"Bearer {key}", "seed": 3},  # type: ignore[dict-item]
    )
    dumped = e.model_dump_json()
    assert key not in dumped
    assert "whatever-it-is" not in dumped
    assert e.labels["seed"] == "3"
    t = Transfer(from_role="planner", to_role="solver", tokens=5, reason=f"key={key}")
    assert key not in t.reason


def test_transfer_moves_positive_tokens() -> None:
    with pytest.raises(pydantic.ValidationError):
        Transfer(from_role="planner", to_role="solver", tokens=0, reason="none")
