"""Structured output: one call, a lenient parse into a pydantic model, at most one repair.

Small models rarely produce clean JSON, so the parser looks for the first JSON object anywhere
in the reply (code fences and prose around it are fine) and tolerates trailing commas and curly
quotes. If the reply still does not parse, the model gets exactly one more chance: the same
conversation plus its own reply plus a message saying what was wrong and what was expected.
Both calls go through :class:`~stratagem.agents.ModelClient`, so both are ledger rows and their
tokens stay charged whatever happens; the failed one is waste in the ``billed - accepted`` view.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, PrivateAttr, ValidationError

from stratagem.agents._backend import Message
from stratagem.agents._client import Completion, ModelClient
from stratagem.agents._prompts import REPAIR_PROMPT, PromptTemplate
from stratagem.budgets import LedgerEntry
from stratagem.errors import OutputParseError

__all__ = [
    "RoleOutput",
    "Structured",
    "complete_structured",
    "extract_json",
    "parse_error_completions",
]

T = TypeVar("T", bound=BaseModel)

_DECODER = json.JSONDecoder()
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


class RoleOutput(BaseModel):
    """Base of the roles' outputs: a value that knows which ledger rows it came from.

    The call ids are private (not fields), so a model's JSON cannot set them and
    ``model_dump()`` leaves them out; graph nodes read :attr:`call_ids` to mark those rows as
    accepted.
    """

    _call_ids: tuple[str, ...] = PrivateAttr(default=())
    _rows: tuple[LedgerEntry, ...] = PrivateAttr(default=())

    @property
    def call_ids(self) -> tuple[str, ...]:
        """Ledger call ids of the reply this value was taken from (empty: no model call)."""
        return self._call_ids

    @property
    def rows(self) -> tuple[LedgerEntry, ...]:
        """The ledger rows of the replies this value was taken from (what ``accepted``
        counts as used)."""
        return self._rows

    def with_call_ids(self, *call_ids: str) -> Self:
        """A copy of this value linked to ``call_ids`` (prefer :meth:`from_completions`)."""
        copy = self.model_copy()
        copy._call_ids = tuple(call_ids)
        return copy

    def from_completions(self, *completions: Completion) -> Self:
        """A copy of this value linked to the replies it was taken from."""
        copy = self.model_copy()
        copy._rows = tuple(c.entry for c in completions)
        copy._call_ids = tuple(r.call_id for r in copy._rows)
        return copy


@dataclass(frozen=True, slots=True)
class Structured(Generic[T]):
    """A parsed reply and the calls it took.

    Attributes:
        value: The parsed value.
        completions: One completion, or two when the first reply needed a repair (the first
            one's tokens are still billed).
    """

    value: T
    completions: tuple[Completion, ...]

    @property
    def repaired(self) -> bool:
        """Whether the value came from the repair call."""
        return len(self.completions) > 1

    @property
    def billed_tokens(self) -> int:
        """Tokens of every HTTP-level attempt behind this value, failed ones included."""
        return sum(c.billed_tokens for c in self.completions)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``, wherever it is.

    Code fences and prose around the object are ignored. If no object decodes as written, a
    second pass forgives trailing commas and curly quotes.

    Raises:
        ValueError: If the text holds no JSON object.
    """
    found = _first_object(text)
    if found is None:
        found = _first_object(_TRAILING_COMMA.sub(r"\1", text.translate(_QUOTES)))
    if found is None:
        raise ValueError("no JSON object found in the reply")
    return found


def _first_object(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    return None


def _describe(exc: Exception) -> str:
    """A short error message a small model can act on (pydantic's own is long)."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err["loc"])
            parts.append(f"{where}: {err['msg']}" if where else err["msg"])
        more = exc.error_count() - len(parts)
        return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
    return str(exc) or type(exc).__name__


def _default_format(schema: type[BaseModel]) -> str:
    keys = ", ".join(f'"{k}"' for k in schema.model_fields)
    return f"one JSON object with the keys {keys}"


async def complete_structured(
    client: ModelClient,
    messages: Sequence[Message],
    schema: type[T],
    *,
    role: str,
    node: str = "",
    branch: str | None = None,
    max_output: int,
    parse: Callable[[str], T] | None = None,
    format_hint: str | None = None,
    repair_prompt: PromptTemplate = REPAIR_PROMPT,
    **complete_kwargs: Any,
) -> Structured[T]:
    """Ask for a reply and parse it into ``schema``, with exactly one repair attempt.

    Args:
        client: The client that makes (and records) the calls.
        messages: The conversation to send.
        schema: The pydantic model the reply must parse into.
        role: The role charged for both calls.
        node: The graph node making the call.
        branch: The graph branch, if any.
        max_output: Output cap for each call.
        parse: Replaces the JSON path: a function from reply text to a value that raises
            :class:`ValueError` (pydantic's ``ValidationError`` is one) when it cannot.
        format_hint: How the expected format is described in the repair message (default:
            the schema's keys as a JSON object).
        repair_prompt: The template of the repair message (fields ``error`` and ``format``).
        **complete_kwargs: Passed on to :meth:`ModelClient.complete` (``temperature``,
            ``seed``, ``task_id``, ``labels``, ...). The repair call adds the label
            ``repair=1``.

    Returns:
        The value and the completions it took (two if it was repaired). A
        :class:`RoleOutput` value is linked to the call it was parsed from (only that call's
        output is accepted; a failed first reply is waste).

    Raises:
        OutputParseError: If the repair reply does not parse either. Its message names the
            role and the error; its ``completions`` attribute holds both completions (read it
            with :func:`parse_error_completions`).
        BudgetExceeded: If a call (the repair included) does not fit the budget.
        ModelError: If the endpoint fails.
    """

    def run_parse(completion: Completion) -> T:
        value = parse(completion.text) if parse is not None else schema.model_validate(
            extract_json(completion.text))
        if isinstance(value, RoleOutput):
            value = value.from_completions(completion)
        return value

    first = await client.complete(messages, role=role, node=node, branch=branch,
                                  max_output=max_output, **complete_kwargs)
    try:
        return Structured(run_parse(first), (first,))
    except ValueError as exc:
        first_error = _describe(exc)
        if first.finish_reason == "length":
            first_error += " (the reply was cut off at the length limit: be shorter)"

    repair = repair_prompt.render(error=first_error,
                                  format=format_hint or _default_format(schema))
    follow_up: list[Message] = [
        *messages,
        {"role": "assistant", "content": first.text},
        *(m for m in repair if m["role"] != "system"),
    ]
    labels = {**(complete_kwargs.pop("labels", None) or {}), "repair": "1"}
    second = await client.complete(follow_up, role=role, node=node, branch=branch,
                                   max_output=max_output, labels=labels, **complete_kwargs)
    try:
        return Structured(run_parse(second), (first, second))
    except ValueError as exc:
        error = OutputParseError(
            f"{role} output did not parse into {schema.__name__} after one repair attempt: "
            f"{_describe(exc)} (first reply: {first_error})"
        )
        error.completions = (first, second)
        raise error from exc


def parse_error_completions(error: OutputParseError) -> tuple[Completion, ...]:
    """The completions behind a failed structured parse (empty if the error has none).

    Their tokens are billed although nothing was accepted: count them as waste.
    """
    completions: tuple[Completion, ...] = getattr(error, "completions", ())
    return completions
