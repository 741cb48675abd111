"""Model access, the four agent roles, their prompts, and the embedded local model server.

:class:`ModelClient` is the one place that makes LLM calls; every backend (an
OpenAI-compatible server, the embedded model, a test double) sits behind it.
"""

from __future__ import annotations

from stratagem.agents._backend import (
    CAPABILITIES,
    BackendCapabilities,
    ChatBackend,
    ChatRequest,
    ChatResponse,
    Message,
    capabilities_for,
    detect_backend,
)
from stratagem.agents._client import Completion, ModelClient, RetryPolicy
from stratagem.agents._defaults import default_backend
from stratagem.agents._local import (
    LOCAL_MODEL_ALIAS,
    LocalModelServer,
    ensure_local_server,
    smollm2_model_path,
)
from stratagem.agents._openai import OpenAIBackend, usage_from_openai

__all__ = [
    "CAPABILITIES",
    "LOCAL_MODEL_ALIAS",
    "BackendCapabilities",
    "ChatBackend",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "LocalModelServer",
    "Message",
    "ModelClient",
    "OpenAIBackend",
    "RetryPolicy",
    "capabilities_for",
    "default_backend",
    "detect_backend",
    "ensure_local_server",
    "smollm2_model_path",
    "usage_from_openai",
]
