"""A chat model that keeps an account's budget call by call: ``budgeted(model, account)``.

For each attempt it makes, the wrapper goes::

    Account.open_call (reserve; the output cap clamped to what the role has left)
      -> Account.sending (write-ahead intent)
      -> the wrapped model's own ``_generate`` / ``_stream`` (its SDK retries turned off;
         the cap sent in the field the backend honours)
      -> the provider's usage (a flagged tiktoken estimate if none; an upper bound when the
         reply was lost) -> Account.close_call (commit, ledger row)

and retries as :class:`~stratagem.agents.ModelClient` does (:class:`RetryPolicy`), so every
attempt is a row. When not even a minimal call fits, :class:`~stratagem.errors.BudgetExceeded`
is raised before anything is sent; :func:`end_on_budget` turns it into the end of the run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableParallel,
    RunnableSequence,
)
from langgraph.graph import END
from langgraph.types import Command
from pydantic import ConfigDict

from stratagem._redact import redact
from stratagem.agents import RetryPolicy, capabilities_for, detect_backend
from stratagem.budgets import (
    CALIBRATION,
    Account,
    OpenCall,
    Usage,
    count_chat_tokens,
    count_text_tokens,
)
from stratagem.errors import BudgetExceeded
from stratagem.integrations._lc_common import (
    RECORDED,
    calibration_key,
    estimate,
    learn,
    message_dicts,
    position,
    request_id_of,
    role_of,
    usage_of,
)
from stratagem.logging import get_logger

__all__ = ["BudgetedChatModel", "budgeted", "end_on_budget"]

_log = get_logger("stratagem.llm")


@dataclass(frozen=True, slots=True)
class _Failure:
    usage: Usage
    status: str
    transient: bool
    retry_after: float | None
    request_id: str | None


class BudgetedChatModel(BaseChatModel):
    """A :class:`BaseChatModel` that reserves, clamps, commits and records every attempt of
    the model it wraps. Build it with :func:`budgeted`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    """The wrapped model (a copy with its SDK retries off)."""
    account: Account
    """The run's account."""
    role: str | None = None
    """The role charged; ``None``: a ``role:<name>`` tag, else the LangGraph node's name."""
    backend: str = "openai"
    """The backend kind (``stratagem.agents.CAPABILITIES``): decides the cap field sent."""
    retry: RetryPolicy = RetryPolicy()
    """The one retry layer."""
    max_output: int = 1024
    """The output cap asked for when neither the call nor the wrapped model sets one."""
    input_margin: float = 0.05
    """Safety margin added to the tiktoken prompt count when reserving."""
    seed: int | None = None
    """Seeds the retry jitter."""

    @property
    def _llm_type(self) -> str:
        return f"budgeted-{self.inner._llm_type}"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {**self.inner._identifying_params, "role": self.role}

    @property
    def model_name(self) -> str:
        """The model name the wrapped model sends."""
        inner = self.inner
        return str(getattr(inner, "model_name", None) or getattr(inner, "model", None)
                   or inner._llm_type)

    # -- what LangChain calls --------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        if getattr(self.inner, "streaming", False):
            # A model built to stream answers invoke() from its stream (as LangChain's own
            # dispatch would): through this model's _stream, so the budget still applies.
            return generate_from_stream(self._stream(messages, stop=stop,
                                                     run_manager=run_manager, **kwargs))
        ctx = self._context(messages, kwargs, run_manager)
        rng = random.Random(self.seed)
        for number in range(1, self.retry.max_attempts + 1):
            call = ctx.open(number)
            try:
                result = self.inner._generate(messages, stop=stop, run_manager=run_manager,
                                              **kwargs, **self._cap(call.max_output, kwargs))
            except BaseException as exc:
                wait = ctx.failed(call, exc, number, self.retry, rng)
                if wait is None:
                    raise
                time.sleep(wait)
                continue
            ctx.succeeded(call, result)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        if getattr(self.inner, "streaming", False):
            return await agenerate_from_stream(self._astream(messages, stop=stop,
                                                             run_manager=run_manager, **kwargs))
        ctx = self._context(messages, kwargs, run_manager)
        rng = random.Random(self.seed)
        for number in range(1, self.retry.max_attempts + 1):
            call = ctx.open(number)
            try:
                result = await self.inner._agenerate(
                    messages, stop=stop, run_manager=run_manager,
                    **kwargs, **self._cap(call.max_output, kwargs))
            except BaseException as exc:
                wait = ctx.failed(call, exc, number, self.retry, rng)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                continue
            ctx.succeeded(call, result)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        ctx = self._context(messages, kwargs, run_manager)
        rng = random.Random(self.seed)
        for number in range(1, self.retry.max_attempts + 1):
            call = ctx.open(number)
            seen = _Seen()
            try:
                for chunk in self.inner._stream(messages, stop=stop, run_manager=run_manager,
                                                **kwargs, **self._cap(call.max_output, kwargs)):
                    seen.add(chunk)
                    yield chunk
            except BaseException as exc:
                # (a stream that already yielded cannot be replayed: it is not retried)
                wait = ctx.failed(call, exc, number, self.retry, rng, seen)
                if wait is None:
                    raise
                time.sleep(wait)
                continue
            ctx.streamed(call, seen)
            return

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        ctx = self._context(messages, kwargs, run_manager)
        rng = random.Random(self.seed)
        for number in range(1, self.retry.max_attempts + 1):
            call = ctx.open(number)
            seen = _Seen()
            try:
                async for chunk in self.inner._astream(
                        messages, stop=stop, run_manager=run_manager,
                        **kwargs, **self._cap(call.max_output, kwargs)):
                    seen.add(chunk)
                    yield chunk
            except BaseException as exc:
                wait = ctx.failed(call, exc, number, self.retry, rng, seen)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                continue
            ctx.streamed(call, seen)
            return

    # -- tools and structured output keep the budget --------------------------------------

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any
                   ) -> Runnable[LanguageModelInput, AIMessage]:
        """The wrapped model's ``bind_tools``, with the calls still going through the budget."""
        return cast("Runnable[LanguageModelInput, AIMessage]",
                    _rebind(self.inner.bind_tools(tools, **kwargs), self.inner, self))

    def with_structured_output(self, schema: Any, *, include_raw: bool = False,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """The wrapped model's ``with_structured_output``, through the budget."""
        chain = self.inner.with_structured_output(schema, include_raw=include_raw, **kwargs)
        return cast("Runnable[LanguageModelInput, Any]", _rebind(chain, self.inner, self))

    # -- internals -------------------------------------------------------------------------

    def _cap(self, cap: int, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        field = capabilities_for(self.backend).output_cap_param
        sent: dict[str, Any] = {"max_tokens": cap}  # ChatOpenAI sends it as max_completion_tokens
        if field == "max_tokens" and "extra_body" in type(self.inner).model_fields:
            # Servers such as llama.cpp and Ollama ignore max_completion_tokens: send the
            # field they honour as well, with the same cap.
            extra = dict(kwargs.get("extra_body") or getattr(self.inner, "extra_body", None)
                         or {})
            sent["extra_body"] = {**extra, "max_tokens": cap}
        return sent

    def _context(self, messages: list[BaseMessage], kwargs: dict[str, Any],
                 run_manager: Any) -> _Attempts:
        asked = kwargs.pop("max_tokens", None) or kwargs.pop("max_completion_tokens", None) \
            or getattr(self.inner, "max_tokens", None) or self.max_output
        md = getattr(run_manager, "metadata", None) or {}
        tags = getattr(run_manager, "tags", None) or []
        pos = position(md)
        role = self.role or role_of(tags, pos.node, None, self.account.scope.get("role"))
        model = self.model_name
        key = calibration_key(model, endpoint=getattr(self.inner, "openai_api_base", None),
                              provider=self.inner._llm_type)
        # scaled by what this server has billed so far (never down), as ModelClient does
        counted = CALIBRATION.prompt(key, count_chat_tokens(message_dicts(messages), model))
        return _Attempts(
            account=self.account, role=role, model=model, backend=self.backend,
            node=pos.node or None, branch=pos.branch, task_id=pos.task_id, asked=int(asked),
            counted=counted, estimate=int(counted * (1 + self.input_margin)) + 1,
            messages=messages, key=key,
        )


class _Seen:
    """What a stream delivered before it ended (or broke)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.request_id: str | None = None

    def add(self, chunk: ChatGenerationChunk) -> None:
        self.parts.append(chunk.text)
        u = usage_of(chunk.message)
        if u is not None:
            self.usage = u  # the last usage seen, never a sum
        headers = (chunk.generation_info or {}).get("headers") \
            or chunk.message.response_metadata.get("headers")
        if isinstance(headers, Mapping) and headers.get("x-request-id"):
            self.request_id = str(headers["x-request-id"])

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class _Attempts:
    """The attempts of one logical call: open, then close as succeeded or failed."""

    account: Account
    role: str
    model: str
    backend: str
    node: str | None
    branch: str | None
    task_id: str | None
    asked: int
    counted: int
    estimate: int
    messages: list[BaseMessage]
    key: tuple[str, str]

    def open(self, number: int) -> OpenCall:
        call = self.account.open_call(
            role=self.role, model=self.model, input_estimate=self.estimate,
            prompt_estimate=self.counted, max_output=self.asked, backend=self.backend,
            attempt=number, node=self.node, branch=self.branch, task_id=self.task_id,
        )
        self.account.sending(call)
        return call

    def succeeded(self, call: OpenCall, result: ChatResult) -> None:
        g = result.generations[0] if result.generations else None
        self._close(call, self._usage(call, usage_of(g.message) if g is not None else None,
                                      g.text if g is not None else ""),
                    request_id=request_id_of_chat(result))

    def streamed(self, call: OpenCall, seen: _Seen) -> None:
        self._close(call, self._usage(call, seen.usage, seen.text), request_id=seen.request_id)

    def _usage(self, call: OpenCall, reported: Usage | None, text: str) -> Usage:
        """The provider's usage (learned from), else a scaled, flagged estimate."""
        if reported is None:
            return estimate(self.messages, text, self.model, call.max_output, key=self.key)
        learn(self.key, self.messages, text, reported)
        return reported

    def failed(self, call: OpenCall, exc: BaseException, number: int, retry: RetryPolicy,
               rng: random.Random, seen: _Seen | None = None) -> float | None:
        """Record the failed attempt; the wait before the next one, or ``None`` to raise."""
        f = _classify(exc, call, seen)
        self._close(call, f.usage, status=f.status,
                    error=redact(f"{type(exc).__name__}: {exc}")[:500],
                    request_id=f.request_id or (seen.request_id if seen else None))
        if not f.transient or number >= retry.max_attempts or (seen and seen.parts):
            return None
        return retry.delay(number, f.retry_after, rng)

    def _close(self, call: OpenCall, usage: Usage, **kw: Any) -> None:
        if usage.source == "provider" and usage.completion_tokens > call.max_output:
            _log.warning("llm.cap_ignored", model=call.model, backend=call.backend,
                         cap_sent=call.max_output, completion=usage.completion_tokens,
                         action="pass backend= to budgeted() so the honoured field is sent")
        self.account.close_call(call, usage, **kw)


def request_id_of_chat(result: ChatResult) -> str | None:
    """The ``x-request-id`` of a chat result (from its response headers, when returned)."""
    for g in result.generations:
        headers = g.message.response_metadata.get("headers") or \
            (g.generation_info or {}).get("headers")
        if isinstance(headers, Mapping) and headers.get("x-request-id"):
            return str(headers["x-request-id"])
    return request_id_of(None)


def _bound(call: OpenCall, received: str) -> Usage:
    completion = max(call.max_output, count_text_tokens(received, call.model)
                     if received else 0)
    return Usage(call.prompt_estimate, completion, None, None, "bound")


def _classify(exc: BaseException, call: OpenCall, seen: _Seen | None) -> _Failure:
    """What a failed attempt cost and whether it is worth another."""
    received = seen.text if seen else ""
    if seen is not None and seen.usage is not None:
        # The usage chunk arrived before the stream broke: the provider's own count.
        return _Failure(seen.usage, "error", True, None, None)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
        return _Failure(_bound(call, received), "cancelled", False, None, None)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        transient = status in (408, 409, 429) or status >= 500
        return _Failure(Usage.zero(), "error", transient, _retry_after(exc), exc.request_id)
    if isinstance(exc, openai.APIConnectionError | json.JSONDecodeError):
        # Timed out, cut short or malformed: the reply may have been generated and billed.
        return _Failure(_bound(call, received), "error", True, None, None)
    if isinstance(exc, BudgetExceeded):
        return _Failure(Usage.zero(), "error", False, None, None)
    return _Failure(Usage.zero(), "error", False, None, None)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return float(raw) / scale
            except ValueError:
                continue
    return None


def _rebind(runnable: Any, old: BaseChatModel, new: BaseChatModel) -> Any:
    """``runnable`` with every binding of ``old`` made a binding of ``new`` (what
    ``bind_tools`` and ``with_structured_output`` build around the wrapped model)."""
    if runnable is old:
        return new
    if isinstance(runnable, RunnableBinding):
        if runnable.bound is old:
            return RunnableBinding(bound=new, kwargs=runnable.kwargs, config=runnable.config,
                                   config_factories=runnable.config_factories,
                                   custom_input_type=runnable.custom_input_type,
                                   custom_output_type=runnable.custom_output_type)
        return runnable.model_copy(update={"bound": _rebind(runnable.bound, old, new)})
    if isinstance(runnable, RunnableSequence):
        return RunnableSequence(*[_rebind(s, old, new) for s in runnable.steps],
                                name=runnable.name)
    if isinstance(runnable, RunnableParallel):
        return RunnableParallel({k: _rebind(v, old, new) for k, v in runnable.steps__.items()})
    for attr in ("mapper", "runnable"):
        inner = getattr(runnable, attr, None)
        if isinstance(inner, Runnable):
            update: dict[str, Any] = {attr: _rebind(inner, old, new)}
            fallbacks = getattr(runnable, "fallbacks", None)
            if fallbacks is not None:
                update["fallbacks"] = [_rebind(f, old, new) for f in fallbacks]
            return runnable.model_copy(update=update)
    return runnable


def _without_sdk_retries(model: BaseChatModel) -> BaseChatModel:
    """A copy of ``model`` whose provider SDK does not retry (stratagem retries, and records
    each attempt), that returns response headers (request ids) and asks for stream usage."""
    fields = type(model).model_fields
    update: dict[str, Any] = {}
    if "max_retries" in fields:
        update["max_retries"] = 0
    if "include_response_headers" in fields:
        update["include_response_headers"] = True
    if "stream_usage" in fields and getattr(model, "stream_usage", None) is None:
        update["stream_usage"] = True
    copy = model.model_copy(update=update)
    for root, leaf in (("root_client", "client"), ("root_async_client", "async_client")):
        client = getattr(copy, root, None)
        if client is not None and hasattr(client, "with_options"):
            client = client.with_options(max_retries=0)
            object.__setattr__(copy, root, client)
            object.__setattr__(copy, leaf, client.chat.completions)
    return copy


def budgeted(
    chat_model: BaseChatModel,
    account: Account,
    *,
    role: str | None = None,
    backend: str | None = None,
    retry: RetryPolicy | None = None,
    max_output: int = 1024,
    input_margin: float = 0.05,
    seed: int | None = None,
) -> BudgetedChatModel:
    """Wrap ``chat_model`` so every call it makes is reserved, capped, committed and recorded.

    The result is a chat model like the one it wraps (``invoke``, ``ainvoke``, ``stream``,
    ``astream``, ``batch``, ``bind_tools`` and ``with_structured_output`` work); calls charge
    ``role`` (else the ``role:<name>`` tag, else the LangGraph node's name). The output cap
    sent is clamped to what the role has left, in the field the backend honours
    (``stratagem.agents.CAPABILITIES``: ``max_tokens`` for llama.cpp and Ollama). The SDK's
    own retries are turned off; ``retry`` retries instead, so every attempt is a row.

    Args:
        chat_model: The model to wrap (``ChatOpenAI`` or any ``BaseChatModel``).
        account: The run's account.
        role: The role charged.
        backend: The backend kind; guessed from the model's base URL if omitted.
        retry: The retry policy (``RetryPolicy()`` if omitted).
        max_output: The cap asked for when neither the call nor the model sets one.
        input_margin: Safety margin on the prompt count when reserving.
        seed: Seeds the retry jitter.

    Raises:
        BudgetExceeded: From a call, when not even a minimal reply fits (nothing is sent).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> from stratagem.budgets import Account, Budget
        >>> acct = Account(budget=Budget(total=500), run_id="r1")
        >>> llm = budgeted(FakeListChatModel(responses=["four"]), acct, role="solver")
        >>> llm.invoke("2+2?").content, len(acct.entries())
        ('four', 1)
    """
    if backend is None:
        base_url = getattr(chat_model, "openai_api_base", None)
        backend = detect_backend(str(base_url) if base_url else None) \
            if hasattr(chat_model, "openai_api_base") else "generic"
    return BudgetedChatModel(
        inner=_without_sdk_retries(chat_model),
        account=account,
        role=role,
        backend=backend,
        retry=retry or RetryPolicy(),
        max_output=max_output,
        input_margin=input_margin,
        seed=seed,
        tags=chat_model.tags,
        metadata={**(chat_model.metadata or {}), RECORDED: True},
        callbacks=chat_model.callbacks,
    )


def end_on_budget(
    node: Callable[..., Any],
    *,
    update: Callable[[Any, BudgetExceeded], Mapping[str, Any] | None] | None = None,
) -> Callable[..., Any]:
    """Wrap a LangGraph node so that running out of budget ends the run gracefully.

    When a call inside ``node`` raises :class:`~stratagem.errors.BudgetExceeded`, the node
    returns ``Command(goto=END, update=update(state, exc))`` instead: the run stops with the
    state it has (the best answer so far, or what ``update`` puts there). ``END`` ends the
    node's own routing: a static edge out of the node still runs, so wrap the nodes after it
    too (each is refused in turn, nothing is sent) or route with conditional edges.

    Args:
        node: The node function (sync or async); its first argument is the state.
        update: Builds the last state update from the state and the refusal.
    """

    def last(state: Any, exc: BudgetExceeded) -> Command[Any]:
        _log.info("llm.budget_end", role=exc.role, limit=exc.limit, spent=exc.spent)
        values = update(state, exc) if update is not None else None
        return Command(goto=END, update=dict(values) if values else None)

    if inspect.iscoroutinefunction(node):
        @functools.wraps(node)
        async def async_wrapper(state: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await node(state, *args, **kwargs)
            except BudgetExceeded as exc:
                return last(state, exc)

        return async_wrapper

    @functools.wraps(node)
    def wrapper(state: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return node(state, *args, **kwargs)
        except BudgetExceeded as exc:
            return last(state, exc)

    return wrapper
