"""Endpoints: where a role's calls go, and the backend that goes there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stratagem.agents._backend import ChatBackend
from stratagem.agents._local import ensure_local_server
from stratagem.agents._openai import OpenAIBackend
from stratagem.errors import ConfigError

__all__ = ["BackendName", "EndpointConfig", "build_backend", "check_endpoint"]

BackendName = Literal["local", "openai", "vllm", "ollama", "llamacpp", "lmstudio", "generic",
                      "simulated"]
"""The endpoint kinds a config may name."""

_NEEDS_NO_MODEL = ("local", "simulated")


class EndpointConfig(BaseModel):
    """Where a role's calls go: the ``[endpoint]`` table of a config, or ``stratagem run``'s
    options. Secrets come from the environment, never from the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName = "local"
    """``local`` (the embedded SmolLM2 server), ``simulated``, or an OpenAI-compatible kind."""
    base_url: str | None = None
    """The endpoint URL (``STRATAGEM_BASE_URL``/``OPENAI_BASE_URL`` if unset)."""
    model: str | None = None
    """The model name (required for every backend but ``local`` and ``simulated``)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key."""
    # Strict numbers: a quoted one ("4") in a config is a mistake to name, not to convert.
    max_concurrency: Annotated[int, Field(strict=True)] | None = Field(default=None, ge=1,
                                                                       le=1024)
    """Requests in flight to this endpoint (default per backend kind)."""
    timeout_s: Annotated[float, Field(strict=True)] = Field(default=120.0, gt=0)
    """Read timeout of one attempt."""
    cap_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    """The request field that caps output on this server (default per backend kind). A
    server that ignores the one sent is detected on its first reply and switched."""

    @model_validator(mode="after")
    def _model_named(self) -> EndpointConfig:
        # Refused when a config loads, before an output folder exists.
        if self.backend not in _NEEDS_NO_MODEL and not (self.model or "").strip():
            raise ValueError(f"model: a model name is required for backend "
                             f"{self.backend!r}: set model = \"...\", e.g. \"gpt-4o-mini\"")
        return self

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    def api_key(self) -> str | None:
        """The key from the environment (never stored)."""
        return os.environ.get(self.api_key_env) or os.environ.get("STRATAGEM_API_KEY")


def check_endpoint(endpoint: EndpointConfig) -> None:
    """Refuse an endpoint that cannot be built, without building it (no server is started,
    nothing is contacted): a remote one with no model, ``openai`` with no key or URL.

    Raises:
        ConfigError: Naming what is missing and how to give it.
    """
    if endpoint.backend in _NEEDS_NO_MODEL:
        return
    if not endpoint.model:
        raise ConfigError(f"a model name is required for backend {endpoint.backend!r}: "
                          'set model = "..." (or --model), e.g. "gpt-4o-mini"')
    if endpoint.backend == "openai" and not endpoint.base_url and not endpoint.api_key():
        raise ConfigError(f"backend 'openai' needs an API key: set {endpoint.api_key_env} "
                          "(or STRATAGEM_API_KEY) in the environment")


def build_backend(endpoint: EndpointConfig, tasks: Sequence[Any] = (),
                  effects: Any = None) -> ChatBackend:
    """The backend an endpoint config names.

    ``simulated`` needs the tasks (anything with ``question``, ``answer`` and
    ``difficulty``: it answers from their gold answers) and takes the planted ``effects``
    (a :class:`stratagem.simulate.SimEffects`); ``local`` starts (or reuses) the embedded
    model server; anything else is an OpenAI-compatible endpoint, for which a model name is
    required.

    Raises:
        ConfigError: If a remote endpoint has no model, or ``openai`` has no API key
            (:func:`check_endpoint`).
    """
    check_endpoint(endpoint)
    if endpoint.backend == "simulated":
        # Imported here: the simulator is built on this package.
        from stratagem.simulate import SimulatedModel, sim_tasks  # noqa: PLC0415

        gold = [(t.question, t.answer or "", t.difficulty) for t in tasks]
        return SimulatedModel(sim_tasks(gold), effects)
    if endpoint.backend == "local":
        server = ensure_local_server()
        return OpenAIBackend(server.model, base_url=server.base_url, api_key="local",
                             backend="llama-cpp-python", timeout_s=endpoint.timeout_s)
    model = str(endpoint.model)  # check_endpoint refused an endpoint without one
    return OpenAIBackend(model, base_url=endpoint.base_url, api_key=endpoint.api_key(),
                         backend=endpoint.backend, timeout_s=endpoint.timeout_s,
                         cap_field=endpoint.cap_field)
