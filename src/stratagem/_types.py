"""Shared vocabulary: aliases and literals used across stratagem's packages."""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = ["CallStatus", "JSONScalar", "Role", "UsageSource"]

Role: TypeAlias = str
"""A role name. The four built-in roles are ``planner``, ``decomposer``, ``solver`` and ``judge``;
users may add their own."""

UsageSource: TypeAlias = Literal["provider", "estimate", "none"]
"""Where a ledger row's token counts come from: the provider's usage, a tiktoken estimate, or
nowhere (``none``: an attempt that got no usage and returned nothing to estimate, charged 0)."""

CallStatus: TypeAlias = Literal["ok", "error", "cancelled"]
"""How an HTTP-level call ended."""

JSONScalar: TypeAlias = str | int | float | bool | None
