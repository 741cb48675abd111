"""Suites by name: :data:`SUITES` and :func:`get_suite`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from stratagem.errors import ConfigError
from stratagem.tasks._arith import ArithSuite
from stratagem.tasks._connectivity import ConnectivitySuite
from stratagem.tasks._humaneval import HumanEvalSuite
from stratagem.tasks._jsonl import JsonlSuite
from stratagem.tasks._task import Suite
from stratagem.tasks._words import WordsSuite

__all__ = ["SUITES", "get_suite"]

SUITES: dict[str, Callable[..., Suite]] = {
    "arith": ArithSuite,
    "connectivity": ConnectivitySuite,
    "words": WordsSuite,
    "humaneval": HumanEvalSuite,
    "jsonl": JsonlSuite,
}
"""Suite constructors by name; add an entry to make your own suite available by name."""


def get_suite(name: str, **params: Any) -> Suite:
    """The suite called ``name``, built with ``params``.

    Args:
        name: A key of :data:`SUITES`.
        **params: The suite's parameters (``depth=5``, ``path="tasks.jsonl"``, ...).

    Raises:
        ConfigError: The name is unknown (the message lists the known ones), a parameter is
            unknown, missing or out of range (the message names it and the fix), or the suite
            needs a package that is not installed.

    Example:
        >>> get_suite("arith", depth=(2, 6)).name
        'arith'
    """
    try:
        constructor = SUITES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown task suite {name!r}; known suites: {', '.join(sorted(SUITES))}"
        ) from None
    try:
        signature = inspect.signature(constructor)
    except (TypeError, ValueError):  # a builtin or C callable: let it check its own arguments
        return constructor(**params)
    accepted = [p for p in signature.parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    described = ", ".join(p.name for p in accepted) or "no parameters"
    unknown = [k for k in params if k not in {p.name for p in accepted}]
    if unknown and not takes_any:
        raise ConfigError(
            f"suite {name!r} has no parameter {unknown[0]!r}; its parameters are: {described}"
        )
    missing = [p.name for p in accepted if p.default is p.empty and p.name not in params]
    if missing:
        raise ConfigError(
            f"suite {name!r} needs the parameter {missing[0]!r} "
            f"(e.g. get_suite({name!r}, {missing[0]}=...)); its parameters are: {described}"
        )
    return constructor(**params)
