"""What the fake server answers: replies, their token counts, and the OpenAI wire shapes.

Tokens are counted as whitespace-separated words, so a test can predict every count by eye:
a prompt costs the words of every message plus 3 per message, a completion costs its words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "FakeReply",
    "FakeUsage",
    "FinishReason",
    "Responder",
    "count_prompt_tokens",
    "count_words",
    "echo_responder",
]

FinishReason: TypeAlias = Literal["stop", "length", "content_filter", "tool_calls"]
"""The ``finish_reason`` values the fake server can send."""

TOKENS_PER_MESSAGE = 3
"""Fixed prompt overhead per message, as in OpenAI's cookbook rule."""


@dataclass(frozen=True)
class FakeReply:
    """The reply a responder wants sent, before the request's output cap is applied.

    Attributes:
        content: The assistant message text.
        prompt_tokens: Prompt tokens to report; ``None`` counts them from the request.
        completion_tokens: Completion tokens to report (reasoning included); ``None`` counts
            the words of ``content`` plus ``reasoning_tokens``.
        cached_tokens: Reported as ``prompt_tokens_details.cached_tokens``; ``None`` omits the
            details object, as local servers do.
        reasoning_tokens: Reported as ``completion_tokens_details.reasoning_tokens``; ``None``
            omits the details object.
        finish_reason: ``None`` means ``"stop"``, or ``"length"`` when the cap truncated.
        logprobs: The log-probability of each word of ``content`` (a sequence, one per word;
            or one number for every word), sent as ``choices[0].logprobs.content`` (per
            chunk when streamed) when the request asks with ``"logprobs": true``; ``None``
            sends ``"logprobs": null``, as a server without them does.
    """

    content: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: FinishReason | None = None
    logprobs: Sequence[float | None] | float | None = None


Responder: TypeAlias = Callable[[dict[str, Any]], FakeReply | str]
"""Turns a decoded ``/v1/chat/completions`` request body into a reply (a plain string is
shorthand for ``FakeReply(content=...)``)."""


@dataclass(frozen=True)
class FakeUsage:
    """Token usage as the fake server sent it (or a sum of such usages).

    Attributes:
        prompt_tokens: ``usage.prompt_tokens``.
        completion_tokens: ``usage.completion_tokens``, reasoning included.
        cached_tokens: ``usage.prompt_tokens_details.cached_tokens``; ``None`` when not sent.
        reasoning_tokens: ``usage.completion_tokens_details.reasoning_tokens``; ``None`` when
            not sent.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``, as OpenAI reports it."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: FakeUsage) -> FakeUsage:
        return FakeUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            _add_known(self.cached_tokens, other.cached_tokens),
            _add_known(self.reasoning_tokens, other.reasoning_tokens),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``usage`` object of an OpenAI chat completion.

        Returns:
            A JSON-ready dict; detail objects appear only for the fields that are known.
        """
        data: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens is not None:
            data["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            data["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return data


def _add_known(a: int | None, b: int | None) -> int | None:
    # An unknown count stays unknown only if no usage reported it at all.
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


def count_words(text: str) -> int:
    """Count the fake tokenizer's tokens: whitespace-separated words.

    Args:
        text: Any text.

    Returns:
        The number of words.
    """
    return len(text.split())


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Count a request's prompt tokens: the words of every message plus 3 per message.

    Args:
        body: A decoded ``/v1/chat/completions`` request body.

    Returns:
        The prompt token count the fake server reports by default.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    dicts = [m for m in messages if isinstance(m, Mapping)]
    return sum(count_words(_message_text(m)) + TOKENS_PER_MESSAGE for m in dicts)


def echo_responder(body: dict[str, Any]) -> FakeReply:
    """The default responder: echo the last message's text, prefixed with ``echo:``.

    Args:
        body: A decoded ``/v1/chat/completions`` request body.

    Returns:
        The reply.
    """
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else {}
    text = _message_text(last) if isinstance(last, Mapping) else ""
    return FakeReply(content=f"echo: {text}".strip())


@dataclass(frozen=True)
class Completion:
    """A reply after the output cap: exactly what the server will put on the wire."""

    id: str
    created: int
    model: str
    content: str
    usage: FakeUsage
    finish_reason: FinishReason
    logprobs: tuple[float | None, ...] | None = None
    """Per word of ``content``, when asked for and the reply has them."""


def output_cap(body: Mapping[str, Any], honours: Sequence[str]) -> int | None:
    """The smallest output cap the request sets among the parameters the server honours."""
    caps = [body[name] for name in honours if isinstance(body.get(name), int)]
    return min(caps) if caps else None


def complete(
    body: dict[str, Any],
    reply: FakeReply | str,
    cap: int | None,
    *,
    completion_id: str,
    created: int,
    model: str,
) -> Completion:
    """Resolve a responder's reply into a :class:`Completion`, truncating it to ``cap``.

    Reasoning tokens are spent first, as on reasoning models: a cap at or below the reasoning
    count yields an empty answer with ``finish_reason="length"``.
    """
    if isinstance(reply, str):
        reply = FakeReply(content=reply)
    words = reply.content.split()
    reasoning = reply.reasoning_tokens
    completion = reply.completion_tokens
    if completion is None:
        completion = len(words) + (reasoning or 0)
    prompt = reply.prompt_tokens
    if prompt is None:
        prompt = count_prompt_tokens(body)
    content = reply.content
    finish: FinishReason = reply.finish_reason or "stop"
    if cap is not None and completion > cap:
        if reasoning is not None:
            reasoning = min(reasoning, cap)
        content = " ".join(words[: max(cap - (reasoning or 0), 0)])
        completion, finish = cap, "length"
    usage = FakeUsage(prompt, completion, reply.cached_tokens, reasoning)
    logprobs: tuple[float | None, ...] | None = None
    if body.get("logprobs") is True and reply.logprobs is not None:
        kept = len(content.split())
        if isinstance(reply.logprobs, int | float):
            logprobs = (float(reply.logprobs),) * kept
        else:
            logprobs = tuple(reply.logprobs)[:kept]
    return Completion(completion_id, created, model, content, usage, finish, logprobs)


def logprobs_json(words: Sequence[str], values: Sequence[float | None] | None) -> Any:
    """A choice's ``logprobs`` object for ``words`` (``None`` when not sent)."""
    if values is None:
        return None
    return {"content": [{"token": w, "logprob": v, "bytes": None, "top_logprobs": []}
                        for w, v in zip(words, values, strict=False)],
            "refusal": None}


def _envelope(obj: str, c: Completion) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": obj,
        "created": c.created,
        "model": c.model,
        "system_fingerprint": "fp_stratagem_fake",
    }


def completion_json(c: Completion, *, with_usage: bool) -> dict[str, Any]:
    """The body of a non-streamed ``chat.completion``."""
    data = _envelope("chat.completion", c)
    data["choices"] = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": c.content, "refusal": None},
            "logprobs": logprobs_json(c.content.split(), c.logprobs),
            "finish_reason": c.finish_reason,
        }
    ]
    if with_usage:
        data["usage"] = c.usage.to_json()
    return data


def stream_chunks(c: Completion, *, with_usage: bool) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply, without ``[DONE]``.

    A role chunk, one chunk per word, a chunk carrying ``finish_reason``, then (if
    ``with_usage``) OpenAI's extra chunk with ``choices: []`` and the usage.
    """

    def chunk(delta: dict[str, Any], finish: FinishReason | None = None,
              logprobs: Any = None) -> dict[str, Any]:
        data = _envelope("chat.completion.chunk", c)
        data["choices"] = [{"index": 0, "delta": delta, "logprobs": logprobs,
                            "finish_reason": finish}]
        if with_usage:
            data["usage"] = None
        return data

    chunks = [chunk({"role": "assistant", "content": ""})]
    for i, word in enumerate(c.content.split()):
        own = None if c.logprobs is None or i >= len(c.logprobs) else c.logprobs[i:i + 1]
        chunks.append(chunk({"content": word if i == 0 else " " + word},
                            logprobs=logprobs_json([word], own)))
    chunks.append(chunk({}, c.finish_reason))
    if with_usage:
        final = _envelope("chat.completion.chunk", c)
        final["choices"] = []
        final["usage"] = c.usage.to_json()
        chunks.append(final)
    return chunks
