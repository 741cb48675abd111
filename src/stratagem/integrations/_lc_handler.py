"""A LangChain callback handler that writes one ledger row per model call it sees.

Attach it to an unmodified graph or Runnable (``config={"callbacks": [handler]}``)::

    on_chat_model_start / on_llm_start   remember the prompt, tags, LangGraph position, time
    on_llm_new_token                     remember what streamed (for a reply that breaks)
    on_llm_end                           usage_metadata (or a flagged estimate) -> Account.record
    on_llm_error                         a row with status ``error`` (``cancelled``)

It observes: the budget is charged but not enforced (use :func:`budgeted` for that), and
retries inside the provider SDK (``ChatOpenAI(max_retries=...)``) never reach callbacks, so
each row is one *logical* call as LangChain saw it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult

from stratagem._redact import redact
from stratagem.budgets import Account, LedgerEntry, Usage
from stratagem.integrations._lc_common import (
    RECORDED,
    calibration_key,
    estimate,
    learn,
    model_of,
    position,
    request_id_of,
    role_of,
    usage_of,
)

__all__ = ["AsyncStratagemCallbackHandler", "StratagemCallbackHandler"]


@dataclass
class _Pending:
    prompt: list[BaseMessage]
    tags: list[str]
    metadata: dict[str, Any]
    model: str
    cap: int | None
    endpoint: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)
    streamed: list[str] = field(default_factory=list)


class _Recorder:
    """The state and logic both handlers share (one lock: callbacks arrive from threads)."""

    def __init__(self, account: Account, roles: Mapping[str, str] | None) -> None:
        self.account = account
        self.roles = dict(roles or {})
        self._pending: dict[UUID, _Pending] = {}
        self._lock = threading.Lock()

    def start(self, prompt: list[BaseMessage], run_id: UUID, tags: list[str] | None,
              metadata: dict[str, Any] | None, invocation: Mapping[str, Any] | None,
              serialized: Mapping[str, Any] | None) -> None:
        md = dict(metadata or {})
        if md.get(RECORDED):
            return  # a budgeted model records its own attempts
        inv = invocation or {}
        model = str(inv.get("model") or inv.get("model_name") or md.get("ls_model_name")
                    or (serialized or {}).get("name") or "unknown")
        cap = inv.get("max_completion_tokens") or inv.get("max_tokens") \
            or md.get("ls_max_tokens")
        kwargs = (serialized or {}).get("kwargs") or {}
        endpoint = inv.get("base_url") or inv.get("openai_api_base") \
            or (kwargs.get("openai_api_base") if isinstance(kwargs, Mapping) else None)
        with self._lock:
            self._pending[run_id] = _Pending(list(prompt), list(tags or ()), md, model,
                                             int(cap) if isinstance(cap, int) else None,
                                             str(endpoint) if endpoint else None)

    def token(self, token: str, run_id: UUID) -> None:
        with self._lock:
            p = self._pending.get(run_id)
            if p is not None:
                p.streamed.append(token)

    def end(self, response: LLMResult, run_id: UUID) -> LedgerEntry | None:
        with self._lock:
            p = self._pending.pop(run_id, None)
        if p is None:
            return None
        model = model_of(response, p.model)
        message = None
        text = ""
        if response.generations and response.generations[0]:
            g = response.generations[0][0]
            message = getattr(g, "message", None)
            text = g.text
        # A stream's usage arrives once, on its last chunk; LangChain merges the chunks into
        # this one message, so it is counted once here.
        key = _key(p, model)
        text = text or "".join(p.streamed)
        usage = usage_of(message)
        if usage is None:
            usage = estimate(p.prompt, text, model, p.cap, key=key)
        else:
            learn(key, p.prompt, text, usage)
        return self._record(p, usage, model, status="ok", request_id=request_id_of(response))

    def error(self, error: BaseException, run_id: UUID) -> LedgerEntry | None:
        with self._lock:
            p = self._pending.pop(run_id, None)
        if p is None:
            return None
        status = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
        usage: Usage
        if getattr(error, "status_code", None) is not None:
            usage = Usage.zero()  # the server refused it: nothing generated, nothing billed
        elif p.streamed or status == "cancelled" or p.cap is not None:
            # The reply was (maybe) being generated when it was lost: what arrived, at least.
            usage = estimate(p.prompt, "".join(p.streamed), p.model, key=_key(p, p.model))
            if p.cap is not None:
                usage = Usage(usage.prompt_tokens, max(usage.completion_tokens, p.cap),
                              None, None, "bound")
        else:
            usage = Usage.zero()
        rid = getattr(error, "request_id", None)
        return self._record(p, usage, p.model, status=status,
                            error=redact(f"{type(error).__name__}: {error}")[:500],
                            request_id=rid if isinstance(rid, str) else None)

    def _record(self, p: _Pending, usage: Usage, model: str, **kw: Any) -> LedgerEntry:
        pos = position(p.metadata)
        role = role_of(p.tags, pos.node, self.roles, self.account.scope.get("role"))
        labels = {"langgraph_ns": pos.namespace} if pos.namespace else None
        return self.account.record(
            usage, model=model, role=role, backend=str(p.metadata.get("ls_provider")
                                                       or "langchain"),
            latency_s=time.perf_counter() - p.t0, started_at=p.started,
            node=pos.node or None, branch=pos.branch, task_id=pos.task_id, labels=labels,
            **kw,
        )


def _key(p: _Pending, model: str) -> tuple[str, str]:
    return calibration_key(model, endpoint=p.endpoint, provider=p.metadata.get("ls_provider"))


def _chat_prompt(messages: list[list[BaseMessage]]) -> list[BaseMessage]:
    return messages[0] if messages else []


def _text_prompt(prompts: Sequence[str]) -> list[BaseMessage]:
    return [HumanMessage(content=p) for p in prompts[:1]]


class StratagemCallbackHandler(BaseCallbackHandler):
    """Records every chat-model (and LLM) call of a LangChain/LangGraph run in an account.

    One ledger row per call: the usage from the message's ``usage_metadata`` (a tiktoken
    estimate flagged ``usage_source="estimate"`` when there is none), the model from the
    response metadata, the node, branch (a ``Send`` index) and task from LangGraph's run
    metadata, and the role from ``roles`` (node -> role), else a ``role:<name>`` tag, else the
    node's name. A failed call is a row with status ``error``.

    It runs inline (no thread hop) in sync and async runs alike; use
    :class:`AsyncStratagemCallbackHandler` where only async handlers are accepted.

    Args:
        account: The run's account (its ledger, budget and prices).
        roles: Node name -> role, for nodes whose name is not their role.

    Example:
        >>> from stratagem.budgets import Account
        >>> handler = StratagemCallbackHandler(Account(run_id="r1"), roles={"write": "solver"})
        >>> # app.invoke(inputs, config={"callbacks": [handler]})
    """

    run_inline = True
    raise_error = False

    def __init__(self, account: Account, roles: Mapping[str, str] | None = None) -> None:
        self._rec = _Recorder(account, roles)

    @property
    def account(self) -> Account:
        """The account rows are recorded in."""
        return self._rec.account

    def on_chat_model_start(self, serialized: dict[str, Any],
                            messages: list[list[BaseMessage]], *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Remember the call until it ends."""
        self._rec.start(_chat_prompt(messages), run_id, tags, metadata,
                        kwargs.get("invocation_params"), serialized)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Remember a text-completion call until it ends."""
        self._rec.start(_text_prompt(prompts), run_id, tags, metadata,
                        kwargs.get("invocation_params"), serialized)

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], *,
                         chunk: Any = None, run_id: UUID, parent_run_id: UUID | None = None,
                         tags: list[str] | None = None, **kwargs: Any) -> None:
        """Keep what streamed, for a reply that breaks before its end."""
        self._rec.token(token if isinstance(token, str) else "", run_id)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Write the call's row."""
        self._rec.end(response, run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Write the failed call's row."""
        self._rec.error(error, run_id)


class AsyncStratagemCallbackHandler(AsyncCallbackHandler):
    """:class:`StratagemCallbackHandler` as an :class:`AsyncCallbackHandler` (same rows).

    Args:
        account: The run's account.
        roles: Node name -> role.
    """

    raise_error = False

    def __init__(self, account: Account, roles: Mapping[str, str] | None = None) -> None:
        self._rec = _Recorder(account, roles)

    @property
    def account(self) -> Account:
        """The account rows are recorded in."""
        return self._rec.account

    async def on_chat_model_start(self, serialized: dict[str, Any],
                                  messages: list[list[BaseMessage]], *, run_id: UUID,
                                  parent_run_id: UUID | None = None,
                                  tags: list[str] | None = None,
                                  metadata: dict[str, Any] | None = None,
                                  **kwargs: Any) -> None:
        """Remember the call until it ends."""
        self._rec.start(_chat_prompt(messages), run_id, tags, metadata,
                        kwargs.get("invocation_params"), serialized)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *,
                           run_id: UUID, parent_run_id: UUID | None = None,
                           tags: list[str] | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Remember a text-completion call until it ends."""
        self._rec.start(_text_prompt(prompts), run_id, tags, metadata,
                        kwargs.get("invocation_params"), serialized)

    async def on_llm_new_token(self, token: str | list[str | dict[str, Any]], *,
                               chunk: Any = None, run_id: UUID,
                               parent_run_id: UUID | None = None,
                               tags: list[str] | None = None, **kwargs: Any) -> None:
        """Keep what streamed."""
        self._rec.token(token if isinstance(token, str) else "", run_id)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Write the call's row."""
        self._rec.end(response, run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID,
                           **kwargs: Any) -> None:
        """Write the failed call's row."""
        self._rec.error(error, run_id)
