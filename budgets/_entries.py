"""The rows of the ledger: one :class:`LedgerEntry` per HTTP-level call, one :class:`Transfer`
per budget move."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stratagem._redact import redact, redact_value
from stratagem._types import CallStatus, UsageSource
from stratagem.budgets._usage import Usage

__all__ = ["LedgerEntry", "Transfer", "new_call_id"]


def new_call_id() -> str:
    """A fresh, globally unique call id (uuid4, hex)."""
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class LedgerEntry(BaseModel):
    """One HTTP-level attempt that reached (or tried to reach) a model endpoint.

    Rows are immutable. ``cached_tokens`` is a subset of ``prompt_tokens`` and
    ``reasoning_tokens`` a subset of ``completion_tokens``; ``None`` means unknown, not zero.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    call_id: str = Field(default_factory=new_call_id)
    """Unique key of this attempt; appending the same call_id twice counts once."""
    run_id: str = ""
    """The run (one task through one topology) this call belongs to."""
    thread_id: str = ""
    """The LangGraph thread (checkpoint key) of the run."""
    task_id: str | None = None
    """The LangGraph task that made the call, from ``runtime.execution_info``."""
    attempt: int = Field(default=1, ge=1)
    """1-based attempt number of this call within its node (retries count up)."""
    role: str
    """The role that made the call: planner, decomposer, solver, judge, or a user role."""
    node: str = ""
    """The graph node that made the call."""
    branch: str | None = None
    """The parallel branch (Send index, sample number, subtask id), if any."""
    model: str
    """The model name sent to the endpoint."""
    backend: str = "openai"
    """The kind of endpoint: openai, vllm, ollama, llamacpp, local, simulated, scripted, ..."""
    prompt_tokens: int = Field(default=0, ge=0)
    """Input tokens billed, cached ones included."""
    completion_tokens: int = Field(default=0, ge=0)
    """Output tokens billed, reasoning ones included."""
    cached_tokens: int | None = Field(default=None, ge=0)
    """Prompt tokens served from cache (subset of prompt_tokens); None when unknown."""
    reasoning_tokens: int | None = Field(default=None, ge=0)
    """Hidden reasoning tokens (subset of completion_tokens); None when unknown."""
    cost_usd: float | None = Field(default=None, ge=0)
    """Dollar cost of this attempt; None when the model's price is unknown."""
    latency_s: float = Field(default=0.0, ge=0)
    """Wall time from request to response (or failure), in seconds."""
    usage_source: UsageSource = "provider"
    """``provider`` when the server reported the usage; ``estimate`` when tiktoken counted a
    whole reply that came without usage; ``bound`` when the reply was lost after the server may
    have billed it (malformed, cut short, cancelled in flight, or in flight at a crash): the
    prompt counted with tiktoken and the completion at ``cap_sent``, an upper bound; ``none``
    when the server refused or never saw the request, charged 0."""
    status: CallStatus = "ok"
    """``ok``, ``error`` (the attempt failed), ``cancelled`` (its branch was cancelled) or
    ``lost`` (the process ended with the request in flight; recovered from its intent)."""
    error: str | None = None
    """Why the attempt failed, for status ``error`` or ``cancelled``."""
    request_id: str | None = None
    """The provider's request id (``x-request-id``), if it sent one."""
    cap_sent: int | None = Field(default=None, ge=0)
    """The output cap sent with the request; ``None`` when not recorded (rows written before
    stratagem 0.3). A completion above it means the server ignored the cap field."""
    started_at: datetime = Field(default_factory=_now)
    """When the request was sent (UTC)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels for analysis: topology, task, seed, suite, ..."""

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(redact_value(v, str(k))) for k, v in value.items()}
        return value

    @field_validator("error", "request_id")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        return None if value is None else redact(value)

    @model_validator(mode="after")
    def _subsets(self) -> LedgerEntry:
        if self.cached_tokens is not None and self.cached_tokens > self.prompt_tokens:
            raise ValueError("cached_tokens is a subset of prompt_tokens and cannot exceed it")
        if self.reasoning_tokens is not None and self.reasoning_tokens > self.completion_tokens:
            raise ValueError(
                "reasoning_tokens is a subset of completion_tokens and cannot exceed it"
            )
        return self

    @property
    def cap_overshoot(self) -> int:
        """Completion tokens beyond the cap that was sent (0 when it held or is unknown)."""
        if self.cap_sent is None:
            return 0
        return max(0, self.completion_tokens - self.cap_sent)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def usage(self) -> Usage:
        """This row's token counts as a :class:`Usage`."""
        return Usage(
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.usage_source,
        )

    @classmethod
    def from_usage(cls, usage: Usage, **fields: Any) -> LedgerEntry:
        """Build a row from a :class:`Usage` plus the other fields."""
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_source=usage.source,
            **fields,
        )


class Transfer(BaseModel):
    """A move of unspent token budget from one role to another, with its reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_call_id)
    """Unique key of this event; appending it twice records it once."""
    run_id: str = ""
    """The run whose budget moved."""
    from_role: str
    """The role that gave up budget."""
    to_role: str
    """The role that received it."""
    tokens: int = Field(gt=0)
    """How many tokens moved."""
    reason: str
    """Why: e.g. ``judge confidence 0.31 < 0.5``."""
    node: str = ""
    """The node that made the move."""
    at: datetime = Field(default_factory=_now)
    """When it happened (UTC)."""

    @field_validator("reason")
    @classmethod
    def _no_secrets(cls, value: str) -> str:
        return redact(value)
