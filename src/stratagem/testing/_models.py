"""In-process test doubles for a model backend: a script of replies, or a function.

Both report token usage (tiktoken counts unless the script says otherwise) and honour the
output cap, so budget and ledger logic is testable offline through the real
:class:`~stratagem.agents.ModelClient`.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from stratagem.agents import BackendCapabilities, ChatRequest, ChatResponse, Message
from stratagem.budgets import Usage, count_chat_tokens, get_encoding

__all__ = ["FunctionModel", "ScriptedModel", "ScriptedReply"]


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One scripted reply. Token counts left ``None`` are counted with tiktoken.

    Attributes:
        text: The completion text (cut to the request's output cap, ``finish_reason="length"``).
        prompt_tokens: Reported prompt tokens.
        completion_tokens: Reported completion tokens.
        cached_tokens: Reported cached prompt tokens (``None``: not reported).
        reasoning_tokens: Reported reasoning tokens (``None``: not reported).
        usage: ``False`` to send no usage at all (the client then estimates and flags it).
        finish_reason: Overrides the computed finish reason.
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage: bool = True
    finish_reason: str | None = None


ScriptItem = str | ScriptedReply | ChatResponse | BaseException
_CAPS = BackendCapabilities("scripted", "max_tokens", True, True, True, 64,
                            bills_lost_replies=False)


def _respond(item: str | ScriptedReply | ChatResponse, request: ChatRequest) -> ChatResponse:
    if isinstance(item, ChatResponse):
        return item
    reply = ScriptedReply(item) if isinstance(item, str) else item
    enc = get_encoding("cl100k_base")
    ids = enc.encode_ordinary(reply.text)
    text, finish = reply.text, reply.finish_reason or "stop"
    if len(ids) > request.max_output:
        text = enc.decode(ids[: request.max_output])
        ids = ids[: request.max_output]
        finish = reply.finish_reason or "length"
    if not reply.usage:
        return ChatResponse(text, None, finish, None, request.model)
    completion = reply.completion_tokens if reply.completion_tokens is not None else len(ids)
    completion = min(completion, max(request.max_output, reply.reasoning_tokens or 0))
    prompt = (
        reply.prompt_tokens
        if reply.prompt_tokens is not None
        else count_chat_tokens(request.messages, "gpt-4")
    )
    usage = Usage(prompt, completion, reply.cached_tokens, reply.reasoning_tokens, "provider")
    return ChatResponse(text, usage, finish, None, request.model)


class _InProcessModel:
    """What both doubles share: names for ledger rows, a per-instance endpoint, the requests
    they received."""

    def __init__(self, *, model: str, name: str) -> None:
        self._model = model
        self._name = name
        self._lock = threading.Lock()
        self.requests: list[ChatRequest] = []
        """Every request received, in order."""

    @property
    def name(self) -> str:
        """Backend kind for ledger rows."""
        return self._name

    @property
    def model(self) -> str:
        """Model name for ledger rows."""
        return self._model

    @property
    def endpoint(self) -> str:
        """A per-instance endpoint key."""
        return f"{self._name}://{id(self):x}"

    @property
    def capabilities(self) -> BackendCapabilities:
        """Reports everything; honours ``max_tokens``."""
        return _CAPS

    async def aclose(self) -> None:
        """Nothing to release."""


class ScriptedModel(_InProcessModel):
    """A backend that replays a script, one item per call, and fails on too many or too few.

    Items are reply strings, :class:`ScriptedReply`, :class:`ChatResponse`, or exceptions to
    raise (e.g. ``TransientModelError("429", retry_after=0)``). A call past the end raises
    ``AssertionError``; :meth:`assert_done` (run automatically on leaving a ``with`` block)
    fails if items are left over.

    Example:
        >>> from stratagem.agents import ModelClient
        >>> with ScriptedModel(["42"]) as model:
        ...     client = ModelClient(model)
        ...     client.complete_sync([{"role": "user", "content": "6*7?"}], role="solver").text
        '42'
    """

    def __init__(self, script: Iterable[ScriptItem], *, model: str = "scripted",
                 name: str = "scripted") -> None:
        """Create a model that will answer with ``script``, in order."""
        super().__init__(model=model, name=name)
        self._script: deque[ScriptItem] = deque(script)
        self._total = len(self._script)

    @property
    def remaining(self) -> int:
        """Script items not yet used."""
        with self._lock:
            return len(self._script)

    async def send(self, request: ChatRequest) -> ChatResponse:
        """Answer with the next script item."""
        with self._lock:
            self.requests.append(request)
            if not self._script:
                raise AssertionError(
                    f"ScriptedModel got call {len(self.requests)} but its script has only "
                    f"{self._total} item(s)"
                )
            item = self._script.popleft()
        if isinstance(item, BaseException):
            raise item
        return _respond(item, request)

    def assert_done(self) -> None:
        """Fail if the script was not used up (too few calls)."""
        left = self.remaining
        if left:
            raise AssertionError(
                f"ScriptedModel expected {self._total} call(s) but got "
                f"{self._total - left}; {left} scripted item(s) unused"
            )

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.assert_done()


Responder = Callable[
    [Sequence[Message], ChatRequest],
    str | ScriptedReply | ChatResponse | Awaitable[str | ScriptedReply | ChatResponse],
]


class FunctionModel(_InProcessModel):
    """A backend whose replies come from a function ``(messages, request) -> reply``.

    The function may be sync or async and may return a string, a :class:`ScriptedReply` or a
    :class:`ChatResponse`, or raise a stratagem model error to simulate a failure.

    Example:
        >>> from stratagem.agents import ModelClient
        >>> echo = FunctionModel(lambda messages, request: messages[-1]["content"].upper())
        >>> ModelClient(echo).complete_sync([{"role": "user", "content": "hi"}],
        ...                                 role="solver").text
        'HI'
    """

    def __init__(self, fn: Responder, *, model: str = "function", name: str = "function"):
        """Wrap ``fn``."""
        super().__init__(model=model, name=name)
        self._fn = fn

    async def send(self, request: ChatRequest) -> ChatResponse:
        """Call the function and turn its answer into a response with usage."""
        with self._lock:
            self.requests.append(request)
        result: Any = self._fn(request.messages, request)
        if inspect.isawaitable(result):
            result = await result
        return _respond(result, request)
