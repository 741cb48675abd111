"""Which endpoint to use when the user configured none: the environment, else the embedded
local model."""

from __future__ import annotations

import os

from stratagem.agents._local import ensure_local_server
from stratagem.agents._openai import OpenAIBackend
from stratagem.errors import ConfigError

__all__ = ["default_backend"]


def default_backend() -> OpenAIBackend:
    """The endpoint named by the environment, or the embedded local model.

    ``STRATAGEM_BASE_URL`` (else ``OPENAI_BASE_URL``) selects an OpenAI-compatible endpoint;
    ``STRATAGEM_MODEL`` names the model (required with a custom base URL);
    ``STRATAGEM_API_KEY`` (else ``OPENAI_API_KEY``) is the key; ``STRATAGEM_BACKEND`` the
    server kind. With none of the base URLs set, the embedded SmolLM2 server is started on
    127.0.0.1 (extra ``local``) and stopped at exit.

    Raises:
        ConfigError: If a base URL is set without a model, or the local extra is missing.
    """
    base_url = os.environ.get("STRATAGEM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get("STRATAGEM_API_KEY") or os.environ.get("OPENAI_API_KEY")
    model = os.environ.get("STRATAGEM_MODEL")
    backend = os.environ.get("STRATAGEM_BACKEND") or None
    if base_url:
        if not model:
            raise ConfigError(
                f"an endpoint is configured ({base_url}) but no model: set STRATAGEM_MODEL "
                "(e.g. STRATAGEM_MODEL=gpt-4o-mini) or name the model in the config"
            )
        return OpenAIBackend(model, base_url=base_url, api_key=api_key, backend=backend)
    server = ensure_local_server()
    return OpenAIBackend(
        server.model, base_url=server.base_url, api_key="local", backend="llama-cpp-python"
    )
