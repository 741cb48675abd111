"""The lean transport: chat completions over aiohttp, without the OpenAI SDK on the hot path.

One attempt is a JSON body posted to ``{base_url}/chat/completions`` and the reply read as
plain dicts. The SDK builds an httpx-style request, parses its URL, merges header tables and
constructs model objects for every reply: about 0.45 ms of CPU per call on a 2-core machine,
five times what aiohttp itself needs (bench/throughput.py prints both). A driver of a local
server at hundreds of requests in flight is bounded by that CPU, so this path is the default.

The semantics are the SDK path's, failure by failure (tests/agents/test_faults.py and
tests/agents/test_transport.py run against both):

* an HTTP error status: 408/429/5xx are transient (with ``Retry-After``/``retry-after-ms``),
  a 400 that says the context overflowed is :class:`ContextLengthExceeded`, others are final;
* a connection that never opened (refused, unresolvable, connect timeout) bills nothing; one
  that broke after the request left, or a read timeout, may have been billed (``billed``);
* a 200 whose body is not a chat completion is a malformed reply (billed);
* a stream cut short keeps the text that arrived (``partial_text``) and any usage it had.

Token log-probabilities (asked with ``"logprobs": true``) are read from
``choices[0].logprobs.content[i].logprob``, in a plain reply and in every chunk of a stream
alike, and averaged into :attr:`ChatResponse.mean_logprob` (:func:`token_logprobs`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from stratagem._redact import redact
from stratagem.agents._backend import ChatResponse
from stratagem.budgets import Usage
from stratagem.errors import ContextLengthExceeded, ModelError, TransientModelError

__all__ = ["DirectSession", "mean_or_none", "retry_after", "token_logprobs", "usage_from_dict"]


def usage_from_dict(raw: object) -> Usage | None:
    """A reply's ``usage`` object as :class:`Usage`; absent details stay ``None`` (unknown).

    The same rules as the SDK path's ``usage_from_openai``: cached tokens are clamped to the
    prompt, reasoning tokens to the completion, so the subset rule holds in the ledger.
    """
    if not isinstance(raw, Mapping):
        return None
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    cached = _detail(raw.get("prompt_tokens_details"), "cached_tokens")
    reasoning = _detail(raw.get("completion_tokens_details"), "reasoning_tokens")
    if cached is not None:
        cached = min(cached, prompt)
    if reasoning is not None:
        reasoning = min(reasoning, completion)
    return Usage(prompt, completion, cached, reasoning, "provider")


def _field(obj: object, name: str) -> object:
    """``obj[name]`` of a dict, or ``obj.name`` of an SDK object (``None`` if absent)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def token_logprobs(logprobs: object) -> list[float]:
    """The tokens' log-probabilities in a choice's ``logprobs`` object.

    ``logprobs`` is ``{"content": [{"token": ..., "logprob": ...}, ...]}`` as OpenAI and
    llama.cpp send it (a dict, or the SDK's object). Entries without a finite number are
    left out: a missing value is unknown, not 0.

    Example:
        >>> token_logprobs({"content": [{"logprob": -0.5}, {"logprob": None}, {"logprob": -1}]})
        [-0.5, -1.0]
        >>> token_logprobs(None)
        []
    """
    content = _field(logprobs, "content")
    if not isinstance(content, list | tuple):
        return []
    found = []
    for entry in content:
        value = _field(entry, "logprob")
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            found.append(float(value))
    return found


def mean_or_none(values: list[float]) -> float | None:
    """The mean of ``values``, or ``None`` for none (unknown, not 0)."""
    return sum(values) / len(values) if values else None


def _count(value: object) -> int:
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _detail(details: object, name: str) -> int | None:
    if not isinstance(details, Mapping):
        return None
    value = details.get(name)
    return None if value is None else _count(value)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked to wait (``retry-after-ms`` or ``Retry-After``, seconds or an
    HTTP date), or ``None``."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class DirectSession:
    """The aiohttp session of one event loop, and how one attempt goes over it.

    Args:
        base_url: The endpoint, without a trailing slash.
        api_key: Sent as ``Authorization: Bearer``; never in an error message.
        timeout_s: Between reads of a reply, and to wait for a free connection.
        connect_timeout_s: To open a connection.
        is_context_overflow: Whether a 400's code and message say the prompt is too long.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float,
                 connect_timeout_s: float,
                 is_context_overflow: Callable[[str | None, str], bool]) -> None:
        self.endpoint = base_url
        self._url = f"{base_url}/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}",
                         "Content-Type": "application/json", "Accept": "application/json"}
        self._overflow = is_context_overflow
        # HTTP(S)_PROXY and NO_PROXY are honoured, as the SDK does, but looked up once
        # for the session: aiohttp's trust_env looks them up in a thread for every request.
        try:
            self._proxy: URL | None
            self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self._url))
        except LookupError:
            self._proxy, self._proxy_auth = None, None
        # limit=0: the client's per-endpoint semaphore is the only limit on requests in
        # flight.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout_s,
                                          sock_connect=connect_timeout_s, sock_read=timeout_s),
        )

    def is_closed(self) -> bool:
        """Whether the session was closed."""
        return self._session.closed

    async def close(self) -> None:
        """Close the session's connections."""
        await self._session.close()

    async def send(self, body: dict[str, Any], *, stream: bool) -> ChatResponse:
        """Post one attempt; every failure becomes a stratagem error (see the module)."""
        data = json.dumps(body).encode()
        request_id: str | None = None
        try:
            async with self._session.post(self._url, data=data, headers=self._headers,
                                          proxy=self._proxy, proxy_auth=self._proxy_auth,
                                          allow_redirects=False) as response:
                request_id = response.headers.get("x-request-id")
                if 300 <= response.status < 400:  # (the SDK does not follow them either)
                    raise ModelError(
                        f"{self.endpoint}: HTTP {response.status}: redirected to "
                        f"{redact(response.headers.get('location', '?'))} - give that URL "
                        "as the base URL", status_code=response.status, request_id=request_id)
                if response.status >= 400:
                    raise self._status_error(response.status, await response.read(),
                                             response.headers, request_id)
                if stream:
                    return await self._stream(response, request_id)
                raw = await response.read()
        except ModelError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:  # no connection: nothing was sent
            raise TransientModelError(
                f"{self.endpoint}: connection failed: {type(exc).__name__}: "
                f"{redact(str(exc))}", billed=False) from exc
        except TimeoutError as exc:  # a read timeout (aiohttp's are TimeoutErrors too)
            raise TransientModelError(f"{self.endpoint}: request timed out",
                                      request_id=request_id, billed=True) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, unresolvable: never sent
            raise TransientModelError(
                f"{self.endpoint}: connection failed: {type(exc).__name__}: "
                f"{redact(str(exc))}", billed=False) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # The request went out and the connection broke: it may have been billed.
            raise TransientModelError(
                f"{self.endpoint}: connection failed: {type(exc).__name__}: "
                f"{redact(str(exc))}", request_id=request_id, billed=True) from exc
        except aiohttp.ClientError as exc:  # a bad status line or header, a cut body
            raise TransientModelError(
                f"{self.endpoint}: malformed response: {redact(str(exc))[:200]}",
                request_id=request_id, billed=True) from exc
        return self._completion(raw, request_id)

    def _completion(self, raw: bytes, request_id: str | None) -> ChatResponse:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise self._malformed(f"{redact(str(exc))[:200]}", request_id) from exc
        if not isinstance(data, dict):
            raise self._malformed(f"expected a JSON object, got {type(data).__name__}",
                                  request_id)
        choices = data.get("choices")
        if not choices or not isinstance(choices, list):
            raise TransientModelError(f"{self.endpoint}: response has no choices",
                                      usage=usage_from_dict(data.get("usage")),
                                      request_id=request_id, billed=True)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise self._malformed("a choice without a message", request_id)
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise self._malformed("a message whose content is not text", request_id)
        model = data.get("model")
        return ChatResponse(
            text=text or "",
            usage=usage_from_dict(data.get("usage")),
            finish_reason=_str_or_none(choice.get("finish_reason")),
            request_id=request_id,
            model=model if isinstance(model, str) else None,
            mean_logprob=mean_or_none(token_logprobs(choice.get("logprobs"))),
        )

    def _malformed(self, detail: str, request_id: str | None) -> TransientModelError:
        return TransientModelError(f"{self.endpoint}: malformed response: {detail}",
                                   request_id=request_id, billed=True)

    async def _stream(self, response: aiohttp.ClientResponse,
                      request_id: str | None) -> ChatResponse:
        parts: list[str] = []
        logprobs: list[float] = []
        usage: Usage | None = None
        finish: str | None = None
        model: str | None = None
        try:
            async for event, data in _events(response.content):
                if data.startswith("[DONE]"):
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError(f"expected a JSON object, got {type(chunk).__name__}")
                error = chunk.get("error")
                if error and (event is None or event == "error"):
                    message = error.get("message") if isinstance(error, dict) else None
                    raise ValueError(message if isinstance(message, str) and message
                                     else "An error occurred during streaming")
                model = _str_or_none(chunk.get("model")) or model
                if chunk.get("usage") is not None:
                    # The last usage seen; never a sum (some servers repeat a running total).
                    usage = usage_from_dict(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta")
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if content and isinstance(content, str):
                        parts.append(content)
                    # (each chunk carries the log-probabilities of its own tokens)
                    logprobs += token_logprobs(choice.get("logprobs"))
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        except (ValueError, aiohttp.ClientError, TimeoutError) as exc:
            raise TransientModelError(
                f"{self.endpoint}: stream cut short: {redact(str(exc))[:200]}",
                request_id=request_id, usage=usage,
                # The stream was answered, so its tokens were generated: estimate them.
                partial_text="".join(parts),
            ) from exc
        if finish is None and usage is None:
            raise TransientModelError(f"{self.endpoint}: stream ended before it finished",
                                      request_id=request_id, partial_text="".join(parts))
        return ChatResponse("".join(parts), usage, finish, request_id, model,
                            mean_or_none(logprobs))

    def _status_error(self, status: int, raw: bytes, headers: Mapping[str, str],
                      request_id: str | None) -> ModelError:
        detail, code = _error_detail(raw)
        message = f"{self.endpoint}: HTTP {status}: {redact(detail)[:300]}"
        if status == 400 and self._overflow(code, detail):
            return ContextLengthExceeded(
                f"{message} - shorten the prompt or use a model with a longer context",
                status_code=status, request_id=request_id)
        if status in (408, 429) or status >= 500:
            return TransientModelError(message, retry_after=retry_after(headers),
                                       status_code=status, request_id=request_id)
        if status in (401, 403):
            message += " - check the API key for this endpoint (OPENAI_API_KEY or config)"
        return ModelError(message, status_code=status, request_id=request_id)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _error_detail(raw: bytes) -> tuple[str, str | None]:
    """An error body's message and code (OpenAI's ``{"error": {...}}`` shape), else its text."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip() or "(no body)", None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        return (str(message) if message else text.strip(),
                str(code) if code is not None else None)
    return str(error), None


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """A body's lines, however long (aiohttp's own line reader refuses lines over 64 KiB)."""
    pending = b""
    async for chunk in content.iter_any():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line
    if pending:
        yield pending


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str | None, str]]:
    """Server-sent events as ``(event name, data)``; data lines joined by newlines."""
    event: str | None = None
    data: list[str] = []
    async for raw in _lines(content):
        line = raw.decode("utf-8").rstrip("\r")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield event, "\n".join(data)
