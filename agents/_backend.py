"""What a model backend is: one request in, one response (with usage) out.

Backends only talk to a model. Budgets, retries, the ledger and logging live in
:class:`~stratagem.agents.ModelClient`, the one place that makes LLM calls, so every backend
(the OpenAI SDK, the scripted and function test doubles, the simulated backend) is accounted
for the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlparse

from stratagem.budgets import Usage

__all__ = [
    "CAPABILITIES",
    "BackendCapabilities",
    "ChatBackend",
    "ChatRequest",
    "ChatResponse",
    "Message",
    "capabilities_for",
    "detect_backend",
]

Message = Mapping[str, Any]
"""A chat message: ``{"role": "user", "content": "..."}`` (``name`` optional)."""

OutputCapParam = Literal["max_completion_tokens", "max_tokens"]


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    """What a kind of server honours and reports. ``None`` means not known: unknown is not no.

    Attributes:
        name: The backend kind, as written in ledger rows.
        output_cap_param: The request field that really caps output on this server.
        reports_cached_tokens: Whether usage carries ``prompt_tokens_details.cached_tokens``.
        reports_reasoning_tokens: Whether usage carries reasoning tokens.
        streams_usage: Whether a stream ends with usage when ``include_usage`` is asked.
        default_concurrency: Requests in flight per endpoint unless configured otherwise.
        bills_lost_replies: A request that reached the server may be billed even if its
            reply never arrives (a real server: yes; an in-process double or simulation: no).
            When true, an attempt cancelled in flight is charged at an upper bound.
    """

    name: str
    output_cap_param: OutputCapParam = "max_tokens"
    reports_cached_tokens: bool | None = None
    reports_reasoning_tokens: bool | None = None
    streams_usage: bool | None = None
    default_concurrency: int = 4
    bills_lost_replies: bool = True


CAPABILITIES: Mapping[str, BackendCapabilities] = {
    "openai": BackendCapabilities("openai", "max_completion_tokens", True, True, True, 16),
    # vLLM honours both cap fields; details only with --enable-prompt-tokens-details and a
    # reasoning parser, so "unknown".
    "vllm": BackendCapabilities("vllm", "max_tokens", None, None, True, 16),
    # Ollama silently ignores max_completion_tokens (ollama/ollama#7125).
    "ollama": BackendCapabilities("ollama", "max_tokens", False, False, True, 2),
    "llamacpp": BackendCapabilities("llamacpp", "max_tokens", None, False, True, 2),
    # llama-cpp-python's server ignores max_completion_tokens and sends no usage when
    # streaming, even with include_usage (TECH_NOTES 7).
    "llama-cpp-python": BackendCapabilities("llama-cpp-python", "max_tokens", False, False,
                                            False, 1),
    "lmstudio": BackendCapabilities("lmstudio", "max_tokens", False, None, None, 2),
    "generic": BackendCapabilities("generic", "max_tokens", None, None, None, 4),
}


def capabilities_for(backend: str) -> BackendCapabilities:
    """The capability record of a backend kind (``generic`` for an unknown name)."""
    return CAPABILITIES.get(backend, BackendCapabilities(backend))


def detect_backend(base_url: str | None) -> str:
    """Guess the backend kind from an endpoint URL (``openai`` for the default endpoint).

    Only the well-known defaults are recognised (api.openai.com, Ollama's port 11434); pass
    ``backend=`` explicitly for anything else to get its exact capabilities.
    """
    if not base_url:
        return "openai"
    url = urlparse(base_url)
    host = (url.hostname or "").lower()
    if host.endswith("openai.com") or host.endswith("openai.azure.com"):
        return "openai"
    if url.port == 11434:
        return "ollama"
    if url.port == 1234:
        return "lmstudio"
    return "generic"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion request, already clamped to the budget.

    Attributes:
        messages: The conversation.
        model: The model name sent to the endpoint.
        max_output: The output cap (clamped by the budget reservation).
        temperature: Sampling temperature, if set.
        seed: Sampling seed, if the server supports it.
        stop: Stop sequences.
        stream: Stream the response (usage comes from the final chunk).
        logprobs: Ask for the sampled tokens' log-probabilities (``"logprobs": true``), so the
            response carries :attr:`ChatResponse.mean_logprob` when the server returns them.
        extra: Further request fields passed through unchanged.
        role: The role asking (metadata for backends such as the simulator; not sent).
        node: The graph node asking (metadata; not sent).
    """

    messages: Sequence[Message]
    model: str
    max_output: int
    temperature: float | None = None
    seed: int | None = None
    stop: Sequence[str] | None = None
    stream: bool = False
    logprobs: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    role: str = ""
    node: str = ""


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """What came back from one HTTP-level attempt.

    Attributes:
        text: The completion text.
        usage: The provider's usage, or ``None`` when the server sent none (the client then
            records a flagged tiktoken estimate).
        finish_reason: ``stop``, ``length``, ... as reported.
        request_id: The provider's request id, if any.
        model: The model name the server reported.
        mean_logprob: The mean log-probability of the completion's tokens
            (``choices[0].logprobs.content[i].logprob``), or ``None`` when the server sent
            none (not asked, or not supported): unknown, never 0.
    """

    text: str
    usage: Usage | None
    finish_reason: str | None = None
    request_id: str | None = None
    model: str | None = None
    mean_logprob: float | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """A model endpoint: an OpenAI-compatible server, a test double, a simulation.

    Raise :class:`~stratagem.errors.TransientModelError` for failures worth retrying,
    :class:`~stratagem.errors.ContextLengthExceeded` for prompts that do not fit, and
    :class:`~stratagem.errors.ModelError` for anything else. Put the usage of a failed
    attempt on the error when the server reported it, so it is charged.
    """

    @property
    def name(self) -> str:
        """The backend kind written in ledger rows (``openai``, ``vllm``, ``scripted``...)."""
        ...

    @property
    def model(self) -> str:
        """The model this backend calls."""
        ...

    @property
    def endpoint(self) -> str:
        """A key naming the endpoint, for concurrency limits (a base URL, or a label)."""
        ...

    @property
    def capabilities(self) -> BackendCapabilities:
        """What this backend honours and reports."""
        ...

    async def send(self, request: ChatRequest) -> ChatResponse:
        """Make one HTTP-level attempt (no retries here)."""
        ...

    async def aclose(self) -> None:
        """Release connections held by this backend."""
        ...
