"""What a user may pass a topology: its documented parameters, each of the annotated type."""

from __future__ import annotations

import re
import typing
from typing import Any

import pytest

from stratagem.errors import ConfigError
from stratagem.graphs import TOPOLOGIES, best_of_n, check_params, topology_params


def test_every_parameter_of_every_topology_has_a_check() -> None:
    # A new parameter of a type check_params does not know would go unchecked.
    for name in TOPOLOGIES:
        for param, hint in topology_params(name).items():
            assert hint in (int, float, bool, str) or typing.get_origin(hint) is typing.Literal, \
                f"{name}.{param}: {hint}"


def test_the_checkpointer_is_not_a_users_parameter() -> None:
    assert "checkpointer" not in topology_params("best_of_n")
    assert topology_params("single") == {}
    assert list(topology_params("refine")) == ["max_rounds", "judge_with", "accept_threshold"]


@pytest.mark.parametrize("topology,params", [
    ("best_of_n", {"n": 3, "select": "judge", "max_rounds": 2, "accept_threshold": 1}),
    ("refine", {"max_rounds": 2, "accept_threshold": 0.5, "judge_with": "verifier"}),
    ("tree", {"mode": "mcts", "iterations": 3, "exploration": 1.4}),
    ("single", {}),
])
def test_good_parameters_pass_unchanged(topology: str, params: dict[str, Any]) -> None:
    assert check_params(topology, params) == params


@pytest.mark.parametrize("topology,params,message", [
    ("best_of_n", {"n": 2.5}, "topology best_of_n: n must be an integer, got 2.5"),
    ("best_of_n", {"n": True}, "topology best_of_n: n must be an integer, got True"),
    ("refine", {"max_rounds": "3"}, "topology refine: max_rounds must be an integer, got '3'"),
    ("tree", {"exploration": float("nan")}, "exploration must be a finite number, got nan"),
    ("tree", {"exploration": 10**400}, "exploration must be a finite number, got 1000"),
    ("refine", {"judge_with": 1}, "topology refine: judge_with must be text, got 1"),
    ("single", {"checkpointer": 1},
     "topology single: unknown parameter 'checkpointer': it takes no parameters"),
    ("best_of_n", {"rounds": 2}, "unknown parameter 'rounds': use one of n, select, max_rounds"),
    ("bogus", {}, "unknown topology 'bogus'"),
])
def test_bad_parameters_are_refused_by_name(topology: str, params: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_params(topology, params)


@pytest.mark.parametrize("max_rounds", [0, -1, 65])
def test_best_of_n_checks_max_rounds_like_refine(max_rounds: int) -> None:
    with pytest.raises(ConfigError, match=f"1 <= max_rounds <= 64, got {max_rounds}"):
        best_of_n(max_rounds=max_rounds)


def test_best_of_n_names_its_two_judges() -> None:
    from stratagem.errors import ConfigError
    from stratagem.graphs import best_of_n

    best_of_n(4, select="judge", judge="outcome")
    with pytest.raises(ConfigError, match="best_of_n judge must be 'reasoning' or 'outcome', "
                                          "got 'critic'"):
        best_of_n(4, select="judge", judge="critic")  # type: ignore[arg-type]
