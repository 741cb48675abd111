"""Building a backend from an endpoint config."""

from __future__ import annotations

from collections.abc import Sequence

from stratagem.ablation._config import EndpointConfig
from stratagem.agents import ChatBackend, OpenAIBackend, ensure_local_server
from stratagem.errors import ConfigError
from stratagem.simulate import SimEffects, SimulatedModel, sim_tasks
from stratagem.tasks import Task

__all__ = ["build_backend"]


def build_backend(
    endpoint: EndpointConfig, tasks: Sequence[Task] = (), effects: SimEffects | None = None
) -> ChatBackend:
    """The backend an endpoint config names.

    ``simulated`` needs the tasks (it answers from their gold answers) and takes the planted
    ``effects``; ``local`` starts (or reuses) the embedded model server; anything else is an
    OpenAI-compatible endpoint, for which a model name is required.

    Raises:
        ConfigError: If a remote endpoint has no model.
    """
    if endpoint.backend == "simulated":
        gold = [(t.question, t.answer or "", t.difficulty) for t in tasks]
        return SimulatedModel(sim_tasks(gold), effects)
    if endpoint.backend == "local":
        server = ensure_local_server()
        return OpenAIBackend(server.model, base_url=server.base_url, api_key="local",
                             backend="llama-cpp-python", timeout_s=endpoint.timeout_s)
    model = endpoint.model
    if not model:
        raise ConfigError(f"a model name is required for backend {endpoint.backend!r}: "
                          'set model = "..." (or --model), e.g. "gpt-4o-mini"')
    if endpoint.backend == "openai" and not endpoint.base_url and not endpoint.api_key():
        raise ConfigError(f"backend 'openai' needs an API key: set {endpoint.api_key_env} "
                          "(or STRATAGEM_API_KEY) in the environment")
    return OpenAIBackend(model, base_url=endpoint.base_url, api_key=endpoint.api_key(),
                         backend=endpoint.backend, timeout_s=endpoint.timeout_s)
