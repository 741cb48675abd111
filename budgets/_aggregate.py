"""Totals and group-bys over ledger rows. Totals are always sums of rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stratagem.budgets._entries import LedgerEntry
from stratagem.errors import ConfigError

__all__ = ["GROUPABLE_FIELDS", "UsageTotals", "entry_key", "filter_entries", "group_entries",
           "sum_entries"]

GROUPABLE_FIELDS = (
    "run_id",
    "thread_id",
    "task_id",
    "attempt",
    "role",
    "node",
    "branch",
    "model",
    "backend",
    "usage_source",
    "status",
)
_ALIASES = {"run": "run_id", "thread": "thread_id", "source": "usage_source"}


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums over a set of ledger rows.

    Unknown is not zero: ``cached_tokens``, ``reasoning_tokens`` and ``cost_usd`` are sums over
    the rows that report them, ``None`` when no row does, and the ``*_unknown`` counts say how
    many rows left them unknown (so a cost with ``cost_unknown > 0`` is a lower bound).
    ``estimated_calls`` rows were counted with tiktoken, ``bound_calls`` rows charged at an
    upper bound (reply lost), ``lost_calls`` rows were in flight when a process died.
    ``bound_completion_tokens`` is the completion those upper-bound rows were charged (the
    cap sent): the most by which the total can exceed what the servers billed, beside the
    tokenizer error of estimated prompts.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    cached_unknown: int = 0
    reasoning_unknown: int = 0
    cost_unknown: int = 0
    estimated_calls: int = 0
    error_calls: int = 0
    cancelled_calls: int = 0
    latency_s: float = 0.0
    bound_calls: int = 0
    lost_calls: int = 0
    bound_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """A flat dict (with ``total_tokens``), for tables and exports."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "cached_unknown": self.cached_unknown,
            "reasoning_unknown": self.reasoning_unknown,
            "cost_unknown": self.cost_unknown,
            "estimated_calls": self.estimated_calls,
            "error_calls": self.error_calls,
            "cancelled_calls": self.cancelled_calls,
            "latency_s": self.latency_s,
            "bound_calls": self.bound_calls,
            "lost_calls": self.lost_calls,
            "bound_completion_tokens": self.bound_completion_tokens,
        }


class _Acc:
    __slots__ = (
        "bound",
        "bound_comp",
        "cached",
        "cached_unk",
        "calls",
        "cancelled",
        "comp",
        "cost",
        "cost_unk",
        "errors",
        "est",
        "lat",
        "lost",
        "prompt",
        "reas",
        "reas_unk",
    )

    def __init__(self) -> None:
        self.calls = self.prompt = self.comp = 0
        self.cached = self.reas = 0
        self.cached_unk = self.reas_unk = self.cost_unk = 0
        self.cost = 0.0
        self.est = self.errors = self.cancelled = self.bound = self.lost = 0
        self.bound_comp = 0
        self.lat = 0.0

    def add(self, e: LedgerEntry) -> None:
        self.calls += 1
        self.prompt += e.prompt_tokens
        self.comp += e.completion_tokens
        if e.cached_tokens is None:
            self.cached_unk += 1
        else:
            self.cached += e.cached_tokens
        if e.reasoning_tokens is None:
            self.reas_unk += 1
        else:
            self.reas += e.reasoning_tokens
        if e.cost_usd is None:
            self.cost_unk += 1
        else:
            self.cost += e.cost_usd
        if e.usage_source == "estimate":
            self.est += 1
        elif e.usage_source == "bound":
            self.bound += 1
            self.bound_comp += e.completion_tokens
        if e.status == "error":
            self.errors += 1
        elif e.status == "cancelled":
            self.cancelled += 1
        elif e.status == "lost":
            self.lost += 1
        self.lat += e.latency_s

    def result(self) -> UsageTotals:
        n = self.calls
        return UsageTotals(
            calls=n,
            prompt_tokens=self.prompt,
            completion_tokens=self.comp,
            cached_tokens=None if n and self.cached_unk == n else self.cached,
            reasoning_tokens=None if n and self.reas_unk == n else self.reas,
            cost_usd=None if n and self.cost_unk == n else round(self.cost, 10),
            cached_unknown=self.cached_unk,
            reasoning_unknown=self.reas_unk,
            cost_unknown=self.cost_unk,
            estimated_calls=self.est,
            bound_calls=self.bound,
            lost_calls=self.lost,
            bound_completion_tokens=self.bound_comp,
            error_calls=self.errors,
            cancelled_calls=self.cancelled,
            latency_s=self.lat,
        )


def entry_key(key: str) -> Callable[[LedgerEntry], Any]:
    """A function reading ``key`` from a row: a field name, an alias, or ``label:NAME``.

    Raises:
        ConfigError: If ``key`` is neither a groupable field nor a label.
    """
    key = _ALIASES.get(key, key)
    if key.startswith(("label:", "labels.")):
        name = key.split(":", 1)[1] if key.startswith("label:") else key.split(".", 1)[1]
        return lambda e: e.labels.get(name)
    if key in GROUPABLE_FIELDS:
        return lambda e: getattr(e, key)
    raise ConfigError(
        f"cannot group or filter the ledger by {key!r}: use one of "
        f"{', '.join(GROUPABLE_FIELDS)}, or label:NAME for a label"
    )


def filter_entries(
    entries: Iterable[LedgerEntry], filters: Mapping[str, Any]
) -> Iterable[LedgerEntry]:
    """Rows whose fields (or ``label:NAME`` labels) equal every value in ``filters``.

    A value may also be a set, list or tuple of accepted values.
    """
    if not filters:
        return entries
    getters = [(entry_key(k), v) for k, v in filters.items()]

    def keep(e: LedgerEntry) -> bool:
        for get, want in getters:
            got = get(e)
            if isinstance(want, set | frozenset | list | tuple):
                if got not in want:
                    return False
            elif got != want:
                return False
        return True

    return (e for e in entries if keep(e))


def sum_entries(entries: Iterable[LedgerEntry]) -> UsageTotals:
    """Sum rows into :class:`UsageTotals`."""
    acc = _Acc()
    for e in entries:
        acc.add(e)
    return acc.result()


def group_entries(entries: Iterable[LedgerEntry], *keys: str) -> dict[Any, UsageTotals]:
    """Sum rows per value of ``keys`` (one key: plain values; several: tuples), sorted by key."""
    if not keys:
        raise ConfigError("group_by needs at least one key, e.g. 'role'")
    getters = [entry_key(k) for k in keys]
    accs: dict[Any, _Acc] = {}
    if len(getters) == 1:
        get = getters[0]
        for e in entries:
            k = get(e)
            acc = accs.get(k)
            if acc is None:
                acc = accs[k] = _Acc()
            acc.add(e)
    else:
        for e in entries:
            k = tuple(g(e) for g in getters)
            acc = accs.get(k)
            if acc is None:
                acc = accs[k] = _Acc()
            acc.add(e)
    return {k: accs[k].result() for k in sorted(accs, key=_sort_key)}


def _sort_key(k: Any) -> Any:
    if isinstance(k, tuple):
        return tuple(_sort_key(x) for x in k)
    return (k is None, str(k))
