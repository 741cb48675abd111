"""Shared CLI plumbing: global options, parsing helpers, console output."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from stratagem.errors import ConfigError

__all__ = ["State", "console", "err_console", "parse_params", "state"]


@dataclass
class State:
    """Options given before the command (``--quiet``, ``--log-format``)."""

    quiet: bool = False


state = State()
console = Console()
err_console = Console(stderr=True)


def parse_params(items: list[str] | None, *, what: str = "--param") -> dict[str, Any]:
    """``["n=4", "select=vote"]`` -> ``{"n": 4, "select": "vote"}`` (numbers and booleans
    are parsed; anything else stays text).

    Raises:
        ConfigError: For an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r} must look like KEY=VALUE, e.g. {what} n=4")
        value: Any = raw
        lowered = raw.strip().lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        out[key.strip()] = value
    return out
