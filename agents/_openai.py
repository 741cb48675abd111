"""The OpenAI-compatible backend: OpenAI, vLLM, Ollama, llama.cpp, the embedded model.

One HTTP-level attempt per :meth:`OpenAIBackend.send`: the SDK's own retries are off
(``max_retries=0``) because :class:`~stratagem.agents.ModelClient` owns the only retry layer.
SDK errors are translated into stratagem's: retryable ones into
:class:`~stratagem.errors.TransientModelError` (with ``Retry-After``), context overflows into
:class:`~stratagem.errors.ContextLengthExceeded`, the rest into
:class:`~stratagem.errors.ModelError`.
"""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from typing import Any

import aiohttp
import httpx2
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from stratagem._redact import redact, register_secret
from stratagem.agents._backend import (
    BackendCapabilities,
    ChatRequest,
    ChatResponse,
    capabilities_for,
    detect_backend,
)
from stratagem.agents._direct import DirectSession, mean_or_none, retry_after, token_logprobs
from stratagem.agents._loops import PerLoop
from stratagem.budgets import Usage
from stratagem.errors import ConfigError, ContextLengthExceeded, ModelError, TransientModelError

__all__ = ["OpenAIBackend", "usage_from_openai"]

_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|too many tokens|exceeds? (the )?"
    r"(model'?s? )?(maximum|max)|n_ctx|prompt is too long",
    re.IGNORECASE,
)


_TRANSPORTS = ("direct", "aiohttp", "httpx2")
_CHAT_PATH = "/chat/completions"


def usage_from_openai(usage: CompletionUsage | None) -> Usage | None:
    """Normalise the SDK's usage; absent detail fields stay ``None`` (unknown), not 0."""
    if usage is None:
        return None
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    cached = getattr(prompt_details, "cached_tokens", None) if prompt_details else None
    reasoning = (
        getattr(completion_details, "reasoning_tokens", None) if completion_details else None
    )
    prompt = int(usage.prompt_tokens or 0)
    completion = int(usage.completion_tokens or 0)
    # A server that reports more cached/reasoning tokens than the total is wrong; clamp
    # rather than lose the row, so the subset rule holds in the ledger.
    if cached is not None:
        cached = min(int(cached), prompt)
    if reasoning is not None:
        reasoning = min(int(reasoning), completion)
    return Usage(prompt, completion, cached, reasoning, "provider")


def _retry_after(response: httpx2.Response | None) -> float | None:
    return None if response is None else retry_after(response.headers)


def _is_context_overflow(exc: openai.APIStatusError) -> bool:
    return _says_context_overflow(getattr(exc, "code", None), str(exc.message))


def _says_context_overflow(code: str | None, message: str) -> bool:
    """Whether an HTTP 400's error code or message says the prompt did not fit."""
    return code == "context_length_exceeded" or bool(_CONTEXT_OVERFLOW.search(message))


def _never_sent(exc: BaseException) -> bool:
    """Whether a connection error happened before the request could reach the server
    (refused, unresolvable, not connected): anywhere in its chain of causes."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError | socket.gaierror
                      | aiohttp.ClientConnectorError | httpx2.ConnectError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_CAP_FIELDS = ("max_tokens", "max_completion_tokens")


class OpenAIBackend:
    """Any OpenAI-compatible chat completions endpoint.

    Args:
        model: The model name to send.
        base_url: The endpoint (``http://127.0.0.1:8000/v1``); ``None`` for OpenAI itself.
        api_key: The key; registered for redaction and never logged or stored.
        backend: The server kind (``openai``, ``vllm``, ``ollama``, ``llamacpp``,
            ``llama-cpp-python``, ``lmstudio``, ``generic``); guessed from the URL if omitted.
            It decides which output-cap field is sent.
        timeout_s: Read timeout of one attempt, in seconds.
        connect_timeout_s: Connect timeout, in seconds.
        extra_body: Extra JSON fields sent with every request (server-specific options).
        transport: ``"direct"`` (the default): JSON over aiohttp without the OpenAI SDK,
            about a fifth of the SDK's CPU per request (bench/throughput.py), with the same
            errors, retries and usage; ``"aiohttp"``: the SDK over aiohttp; ``"httpx2"``:
            the SDK's own default transport. All three honour ``HTTP(S)_PROXY``/
            ``NO_PROXY``, ``timeout_s`` (between reads, and for a free connection) and
            ``connect_timeout_s``; aiohttp has no write timeout.
        cap_field: The request field that caps output (``max_tokens`` or
            ``max_completion_tokens``); the backend kind's default if omitted. When a reply
            overshoots the cap it was sent, the client switches this endpoint to the other
            field (:meth:`use_cap_field`) and warns once.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        backend: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        extra_body: dict[str, Any] | None = None,
        transport: str = "direct",
        cap_field: str | None = None,
    ) -> None:
        if transport not in _TRANSPORTS:
            raise ConfigError(f"transport must be one of {', '.join(_TRANSPORTS)}, "
                              f"got {transport!r}")
        self._transport = transport
        self._model = model
        self._base_url = base_url.rstrip("/") if base_url else None
        self._api_key = api_key or "not-needed"
        register_secret(api_key)
        self._caps = capabilities_for(backend or detect_backend(base_url))
        if cap_field is not None:
            self.use_cap_field(cap_field)
        self._timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s)
        self._timeout_s, self._connect_s = timeout_s, connect_timeout_s
        self._extra_body = dict(extra_body or {})
        # Connection pools belong to one event loop: one SDK client per loop, closed when
        # the loop ends even if nobody awaits aclose().
        self._clients: PerLoop[openai.AsyncOpenAI | DirectSession] = PerLoop(
            self._new_client, lambda c: c.close())

    @property
    def name(self) -> str:
        """The backend kind written in ledger rows."""
        return self._caps.name

    @property
    def model(self) -> str:
        """The model this backend calls."""
        return self._model

    @property
    def endpoint(self) -> str:
        """The base URL (the key of the per-endpoint concurrency limit)."""
        return self._base_url or "https://api.openai.com/v1"

    @property
    def capabilities(self) -> BackendCapabilities:
        """What this server honours and reports."""
        return self._caps

    def use_cap_field(self, field: str) -> None:
        """Send the output cap in ``field`` from now on (the one this server honours).

        Raises:
            ConfigError: If ``field`` is neither ``max_tokens`` nor ``max_completion_tokens``.
        """
        if field not in _CAP_FIELDS:
            raise ConfigError(f"cap_field must be one of {', '.join(_CAP_FIELDS)}, got {field!r}")
        self._caps = replace(self._caps, output_cap_param=field)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self._model!r}, endpoint={self.endpoint!r}, " \
               f"backend={self.name!r})"

    def _new_client(self) -> openai.AsyncOpenAI | DirectSession:
        if self._transport == "direct":
            return DirectSession(self.endpoint, self._api_key,
                                 timeout_s=self._timeout_s, connect_timeout_s=self._connect_s,
                                 is_context_overflow=_says_context_overflow)
        http_client = (openai.DefaultAioHttpClient(timeout=self._timeout)
                       if self._transport == "aiohttp" else None)
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            max_retries=0,  # ModelClient owns the only retry layer
            timeout=self._timeout,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        await self._clients.aclose()

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [dict(m) for m in request.messages],
            self._caps.output_cap_param: request.max_output,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(self._extra_body)
        body.update(request.extra)
        if request.logprobs:
            body["logprobs"] = True
            # llama-cpp-python's server computes log-probabilities only when top_logprobs is
            # set (0.3.x: ``logprobs=top_logprobs if logprobs else None``); 0 is valid for
            # OpenAI too (no alternatives, the sampled token's value only).
            body.setdefault("top_logprobs", 0)
        if request.stream:
            body["stream"] = True
            # Usage must come back; other stream options of the caller's are kept (vLLM's
            # continuous_usage_stats, ...).
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                      "include_usage": True}
        return body

    async def send(self, request: ChatRequest) -> ChatResponse:
        """One attempt; SDK errors become stratagem errors (see the module docstring)."""
        client = await self._clients.get()
        if isinstance(client, DirectSession):
            return await client.send(self._body(request), stream=request.stream)
        # The SDK's documented call for a raw request (``client.post``) with the JSON body
        # built here: ``chat.completions.create`` would first walk every message through
        # its type-driven transform, the largest CPU cost of a call in a wide fan-out, and
        # a no-op for plain chat messages.
        body = self._body(request)
        request_id: str | None = None
        try:
            if request.stream:
                return await self._stream(client, body)
            raw = await client.post(_CHAT_PATH, body=body, cast_to=httpx2.Response)
            request_id = raw.headers.get("x-request-id")
            data = raw.json()
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            completion = ChatCompletion.construct(**data)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except openai.APITimeoutError as exc:
            raise self._connection_error(exc) from exc
        except openai.APIConnectionError as exc:
            raise self._connection_error(exc) from exc
        except (openai.APIResponseValidationError, ValueError, aiohttp.ClientError) as exc:
            # (aiohttp's own parse errors - a bad status line or header - are not in the
            # SDK transport's exception map and arrive as they are.)
            raise TransientModelError(
                f"{self.endpoint}: malformed response: {redact(str(exc))[:200]}",
                request_id=request_id, billed=True,
            ) from exc
        choices = getattr(completion, "choices", None)
        if choices and (choices[0] is None or getattr(choices[0], "message", None) is None):
            raise TransientModelError(f"{self.endpoint}: malformed response: a choice without "
                                      "a message", request_id=request_id, billed=True)
        if not choices:
            raise TransientModelError(
                f"{self.endpoint}: response has no choices",
                usage=usage_from_openai(getattr(completion, "usage", None)),
                request_id=request_id, billed=True,
            )
        choice = completion.choices[0]
        return ChatResponse(
            text=choice.message.content or "",
            usage=usage_from_openai(completion.usage),
            finish_reason=choice.finish_reason,
            request_id=request_id,
            model=completion.model,
            mean_logprob=mean_or_none(token_logprobs(getattr(choice, "logprobs", None))),
        )

    def _connection_error(self, exc: openai.APIConnectionError) -> TransientModelError:
        """A request that got no response: timed out, or the connection failed.

        Over aiohttp a refused or dropped connection arrives as a *connect timeout*
        (the transport's exception map), so the root cause decides, not the class.
        """
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        # httpx2/httpcore2 (ReadTimeout, ...) and aiohttp (ServerTimeoutError, a
        # TimeoutError) name their timeouts so; a refused connection is neither.
        timed_out = isinstance(root, TimeoutError) or "Timeout" in type(root).__name__
        if timed_out:
            # (the request may have been read and its reply generated: charged at a bound)
            return TransientModelError(f"{self.endpoint}: request timed out", billed=True)
        # A connection that never opened bills nothing; one that broke after the request
        # went out (a body cut short, the server hanging up) may have been billed.
        never_sent = _never_sent(exc)
        return TransientModelError(
            f"{self.endpoint}: connection failed: {type(root).__name__}: {redact(str(root))}",
            billed=not never_sent,
        )

    async def _stream(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> ChatResponse:
        parts: list[str] = []
        logprobs: list[float] = []
        usage: Usage | None = None
        finish: str | None = None
        model: str | None = None
        request_id: str | None = None
        # Errors of the request (refused, timed out, an HTTP error status) come before any
        # response: send() translates them as it does for a plain request.
        stream = await client.post(_CHAT_PATH, body=body, cast_to=ChatCompletionChunk,
                                   stream=True, stream_cls=openai.AsyncStream[ChatCompletionChunk])
        try:
            response = getattr(stream, "response", None)
            if response is not None:
                request_id = response.headers.get("x-request-id")
            async with stream:  # closes the connection whatever happens below
                async for chunk in stream:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        # Keep the last usage seen; never sum chunks (some servers send
                        # cumulative usage on every chunk).
                        usage = usage_from_openai(chunk.usage)
                    # (the usage chunk has choices == []; a broken server may send null)
                    received: list[Any] = list(chunk.choices or ())
                    for choice in received:
                        if choice is None:
                            continue
                        if choice.delta and choice.delta.content:
                            parts.append(choice.delta.content)
                        logprobs += token_logprobs(getattr(choice, "logprobs", None))
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except (openai.APIError, httpx2.HTTPError, ValueError, aiohttp.ClientError) as exc:
            # (openai.APIError: an error event in the middle of the stream.)
            raise TransientModelError(
                f"{self.endpoint}: stream cut short: {redact(str(exc))[:200]}",
                request_id=request_id,
                usage=usage,
                # The stream was answered, so its tokens were generated: estimate them.
                partial_text="".join(parts),
            ) from exc
        if finish is None and usage is None:
            # The server closed the stream without a finish reason or usage: cut short.
            raise TransientModelError(
                f"{self.endpoint}: stream ended before it finished",
                request_id=request_id,
                partial_text="".join(parts),
            )
        return ChatResponse("".join(parts), usage, finish, request_id, model,
                            mean_or_none(logprobs))

    def _status_error(self, exc: openai.APIStatusError) -> ModelError:
        status = exc.status_code
        rid = exc.request_id
        message = f"{self.endpoint}: HTTP {status}: {redact(str(exc.message))[:300]}"
        if status == 400 and _is_context_overflow(exc):
            return ContextLengthExceeded(
                f"{message} - shorten the prompt or use a model with a longer context",
                status_code=status,
                request_id=rid,
            )
        if status in (408, 429) or status >= 500:
            return TransientModelError(
                message, retry_after=_retry_after(exc.response), status_code=status,
                request_id=rid,
            )
        if status in (401, 403):
            message += " - check the API key for this endpoint (OPENAI_API_KEY or config)"
        return ModelError(message, status_code=status, request_id=rid)

