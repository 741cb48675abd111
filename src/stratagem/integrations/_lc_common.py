"""What the LangChain adapters share: reading usage, model and LangGraph position."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from stratagem.budgets import CALIBRATION, Usage, count_chat_tokens, count_text_tokens

__all__ = [
    "RECORDED",
    "Position",
    "calibration_key",
    "estimate",
    "learn",
    "message_dicts",
    "model_of",
    "position",
    "request_id_of",
    "role_of",
    "usage_of",
]

RECORDED = "stratagem_recorded"
"""Metadata key a budgeted model puts on its runs: it records them itself, so a callback
handler attached to the same run must not record them again."""

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
          "function": "function"}


def message_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as the chat dicts tiktoken counting expects."""
    return [{"role": _ROLES.get(m.type, m.type), "content": m.text} for m in messages]


def usage_of(message: Any) -> Usage | None:
    """The provider's usage from an ``AIMessage``'s ``usage_metadata`` (``None`` if absent).

    ``input_token_details.cache_read`` is the cached part of the prompt and
    ``output_token_details.reasoning`` the reasoning part of the completion; a detail the
    provider did not send stays unknown (``None``), not zero.
    """
    md = getattr(message, "usage_metadata", None)
    if not md:
        return None
    prompt = int(md.get("input_tokens") or 0)
    completion = int(md.get("output_tokens") or 0)
    cached = (md.get("input_token_details") or {}).get("cache_read")
    reasoning = (md.get("output_token_details") or {}).get("reasoning")
    return Usage(
        prompt,
        completion,
        None if cached is None else min(int(cached), prompt),
        None if reasoning is None else min(int(reasoning), completion),
        "provider",
    )


def calibration_key(model: str, *, endpoint: object = None,
                    provider: object = None) -> tuple[str, str]:
    """The :data:`~stratagem.budgets.CALIBRATION` key of a LangChain model's calls: its base
    URL when known (the key :class:`~stratagem.agents.ModelClient` uses for that server),
    else its provider."""
    where = str(endpoint).rstrip("/") if endpoint else f"langchain:{provider or 'unknown'}"
    return where, model


def estimate(prompt: Sequence[BaseMessage], text: str, model: str,
             cap: int | None = None, *, key: tuple[str, str] | None = None) -> Usage:
    """A tiktoken estimate for a reply that came without usage (flagged ``estimate``),
    scaled to what the server of ``key`` has been seen to bill."""
    usage = Usage(count_chat_tokens(message_dicts(prompt), model),
                  count_text_tokens(text, model) if text else 0, None, None, "estimate")
    if key is not None:
        usage = CALIBRATION.estimate(key, usage)
    if cap is not None and usage.completion_tokens > cap:
        usage = Usage(usage.prompt_tokens, cap, None, None, "estimate")
    return usage


def learn(key: tuple[str, str], prompt: Sequence[BaseMessage], text: str,
          usage: Usage) -> None:
    """Teach :data:`~stratagem.budgets.CALIBRATION` from a reply with the provider's usage."""
    if usage.source == "provider" and CALIBRATION.wants(key):
        CALIBRATION.observe(key, usage=usage,
                            counted_prompt=count_chat_tokens(message_dicts(prompt), key[1]),
                            counted_text=count_text_tokens(text, key[1]) if text else 0)


def model_of(result: LLMResult | None, fallback: str) -> str:
    """The model that answered, from the response metadata (else ``fallback``)."""
    if result is not None:
        for gens in result.generations:
            for g in gens:
                if isinstance(g, ChatGeneration):
                    name = g.message.response_metadata.get("model_name") \
                        or g.message.response_metadata.get("model")
                    if name:
                        return str(name)
        name = (result.llm_output or {}).get("model_name")
        if name:
            return str(name)
    return fallback


def request_id_of(result: LLMResult | None) -> str | None:
    """The provider's ``x-request-id``, when the model returned its response headers."""
    if result is None:
        return None
    for gens in result.generations:
        for g in gens:
            if isinstance(g, ChatGeneration):
                headers = g.message.response_metadata.get("headers") or {}
                rid = headers.get("x-request-id") if isinstance(headers, Mapping) else None
                if rid:
                    return str(rid)
    return None


@dataclass(frozen=True, slots=True)
class Position:
    """Where in a LangGraph run a call was made (all empty outside a graph)."""

    node: str = ""
    step: int | None = None
    branch: str | None = None
    task_id: str | None = None
    namespace: str = ""


def position(metadata: Mapping[str, Any] | None) -> Position:
    """Read node, superstep, ``Send`` branch, task and subgraph namespace from LangGraph's
    run metadata (``langgraph_node``, ``langgraph_step``, ``langgraph_path``,
    ``langgraph_checkpoint_ns``)."""
    if not metadata or "langgraph_node" not in metadata:
        return Position()
    ns = str(metadata.get("langgraph_checkpoint_ns") or metadata.get("checkpoint_ns") or "")
    parts = [p for p in ns.split("|") if p]
    task_id = parts[-1].rpartition(":")[2] if parts and ":" in parts[-1] else None
    names = [p.split(":")[0] for p in parts]
    path: Sequence[Any] = tuple(metadata.get("langgraph_path") or ())
    branch = None
    # A Send task's path is ("__pregel_push", index, ...): the index is its branch.
    if len(path) >= 2 and path[0] == "__pregel_push":
        branch = str(path[1])
    step = metadata.get("langgraph_step")
    return Position(
        node=str(metadata["langgraph_node"]),
        step=int(step) if isinstance(step, int) else None,
        branch=branch,
        task_id=task_id,
        namespace="|".join(names[:-1]),
    )


def role_of(tags: Sequence[str] | None, node: str, roles: Mapping[str, str] | None,
            default: str | None) -> str:
    """The role of a call: the ``roles`` map (node -> role), a ``role:<name>`` tag, the
    node's name, else ``default`` (else ``"llm"``)."""
    if roles and node in roles:
        return roles[node]
    for tag in tags or ():
        if tag.startswith("role:") and len(tag) > 5:
            return tag[5:]
    return node or default or "llm"
