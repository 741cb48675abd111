"""The topologies by name, and the check of the parameters a user gives one.

A topology's parameters are its builder's keyword arguments, minus those the library sets
itself (``checkpointer``); their types are the builder's annotations. Checking them here, once,
lets the CLI and the ablation runner refuse a mistake before any run starts, with one line
that names the topology, the parameter, the value and what is allowed. Ranges and choices
stay with each builder, which checks them when it is called.
"""

from __future__ import annotations

import importlib
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from typing import Any

from stratagem.errors import ConfigError
from stratagem.graphs._adaptive import adaptive
from stratagem.graphs._consistency import adaptive_consistency
from stratagem.graphs._decompose import decompose_solve
from stratagem.graphs._loops import best_of_n, refine
from stratagem.graphs._simple import Compiled, plan_solve, single
from stratagem.graphs._tree import tree

__all__ = ["DESIGN_ROLE_ORDER", "TOPOLOGIES", "check_params", "design_roles",
           "resolve_topology", "topology_params"]

TOPOLOGIES: dict[str, Callable[..., Compiled]] = {
    "single": single,
    "plan_solve": plan_solve,
    "decompose_solve": decompose_solve,
    "best_of_n": best_of_n,
    "refine": refine,
    "tree": tree,
    "adaptive": adaptive,
    "adaptive_consistency": adaptive_consistency,
}
"""Topology name -> builder."""

DESIGN_ROLE_ORDER = ("planner", "decomposer", "solver", "judge", "verifier")
"""The order of :func:`design_roles` (``verifier``: a task's checker in the judge's place)."""


def design_roles(topology: str, params: Mapping[str, Any] | None = None, *,
                 mode: str | None = None) -> tuple[str, ...] | None:
    """The roles ``topology`` uses by design, in :data:`DESIGN_ROLE_ORDER`; ``None`` for a
    builder of your own (``"module:function"``), whose design stratagem cannot know.

    A coordination variable for attribution: it depends on the topology, its parameters and,
    for ``adaptive``, the planner's ``mode``, never on which calls a budget let through (a
    best-of-8 cell whose budget fit no call still *is* a solver-and-verifier design).

    Example:
        >>> design_roles("best_of_n", {"n": 4, "select": "verifier"})
        ('solver', 'verifier')
        >>> design_roles("adaptive", mode="decompose")
        ('planner', 'decomposer', 'solver')
    """
    if ":" in topology:
        return None
    params = dict(params or {})
    judge = "verifier" if params.get("judge_with") == "verifier" else "judge"
    roles: set[str] = {"solver"}
    if topology == "plan_solve":
        roles.add("planner")
    elif topology == "decompose_solve":
        roles.add("decomposer")
    elif topology == "best_of_n":
        select = params.get("select", "vote")
        if select in ("judge", "knockout"):
            roles.add("judge")
        elif select == "verifier":
            roles.add("verifier")
    elif topology in ("refine", "tree"):
        roles.add(judge)
    elif topology == "adaptive":
        roles.add("planner")
        if mode == "decompose":
            roles.add("decomposer")
        elif mode in ("parallel", "sequential"):
            roles.add(judge)
    elif topology == "compute_optimal":
        # Its design is what its table may choose, whichever option a query got.
        table = params.get("table")
        checked = isinstance(table, Mapping) and bool(table.get("verifier"))
        options = [str(o) for o in table.get("options", ())] \
            if isinstance(table, Mapping) else []
        if checked:
            roles.add("verifier")
        if "decompose" in options:
            roles.add("decomposer")
        if not checked and any(o.startswith("refine:") for o in options):
            roles.add("judge")
    elif topology not in TOPOLOGIES:
        raise ConfigError(f"unknown topology {topology!r}: use one of {', '.join(TOPOLOGIES)}")
    return tuple(r for r in DESIGN_ROLE_ORDER if r in roles)


_INTERNAL = frozenset({"checkpointer"})
"""Builder arguments the library passes itself, never a config file or ``--param``."""

def _finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        return False


_KINDS: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    # bool is a subclass of int in Python, but True is not a count.
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a finite number", _finite_number),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    str: ("text", lambda v: isinstance(v, str)),
}


def resolve_topology(topology: str) -> Callable[..., Compiled]:
    """The builder of ``topology``: a built-in name, or your own as ``"module:function"``
    (a function returning a compiled graph over :class:`RunState` with a
    :class:`RunContext` context schema; its keyword arguments are its parameters).

    Raises:
        ConfigError: For an unknown name, a module that does not import, or an attribute
            that is not callable.
    """
    builder = TOPOLOGIES.get(topology)
    if builder is not None:
        return builder
    module_name, sep, attr = topology.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"unknown topology {topology!r}: use one of {', '.join(TOPOLOGIES)}, "
                          "or your own builder as 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"topology {topology!r}: cannot import {module_name!r} ({exc}); "
                          "is it on the Python path?") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(f"topology {topology!r}: {module_name} has no function {attr!r}")
    return found  # type: ignore[no-any-return]


def topology_params(topology: str) -> dict[str, Any]:
    """The parameters a user may give ``topology``: name -> annotated type.

    Raises:
        ConfigError: For an unknown topology.
    """
    builder = resolve_topology(topology)
    hints = typing.get_type_hints(builder)
    return {name: hints[name] for name in inspect.signature(builder).parameters
            if name not in _INTERNAL}


def check_params(topology: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse a parameter ``topology`` does not document, or a value of the wrong type.

    Values of a ``Literal`` type (``select``, ``mode``) and ranges are left to the builder,
    whose messages name the choices.

    Returns:
        The parameters, as a new dict for the builder.

    Raises:
        ConfigError: Naming the topology, the parameter, the value and what is allowed.
    """
    allowed = topology_params(topology)
    for name, value in params.items():
        if name not in allowed:
            takes = f"use one of {', '.join(allowed)}" if allowed else "it takes no parameters"
            raise ConfigError(f"topology {topology}: unknown parameter {name!r}: {takes}")
        kind = _KINDS.get(allowed[name])
        if kind is not None and not kind[1](value):
            raise ConfigError(f"topology {topology}: {name} must be {kind[0]}, got {value!r}")
    return dict(params)
