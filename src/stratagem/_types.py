"""Shared vocabulary: aliases and literals used across stratagem's packages."""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = ["CallStatus", "JSONScalar", "Role", "UsageSource"]

Role: TypeAlias = str
"""A role name. The four built-in roles are ``planner``, ``decomposer``, ``solver`` and ``judge``;
users may add their own."""

UsageSource: TypeAlias = Literal["provider", "estimate", "bound", "none"]
"""Where a ledger row's token counts come from: the provider's usage; a tiktoken ``estimate``
of a reply that came back whole but without usage; an upper ``bound`` for an attempt the
server may have billed but whose reply was lost (malformed, cut short, cancelled in flight, or
in flight when the process died): the prompt counted with tiktoken and the completion at the
cap that was sent; or ``none``: an attempt the server refused or never saw, charged 0."""

CallStatus: TypeAlias = Literal["ok", "error", "cancelled", "lost"]
"""How an HTTP-level call ended. ``lost``: the process ended while the request was in flight
(recovered from its write-ahead intent); its outcome is unknown and it is charged at its
reservation."""

JSONScalar: TypeAlias = str | int | float | bool | None
