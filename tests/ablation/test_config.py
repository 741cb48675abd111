"""The ablation config: every table validates, errors name the field path, nothing unknown
slips through, and TOML problems are the user's (ConfigError), never a traceback."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import (
    EndpointConfig,
    TopologyConfig,
    load_config,
    parse_config,
)
from stratagem.budgets import DifficultyAdaptive
from stratagem.errors import ConfigError

MINIMAL: dict[str, Any] = {
    "grid": {"topologies": ["single"], "budgets": [500]},
    "suites": [{"name": "arith"}],
}

FULL_TOML = """\
name = "full"
output = "out/full"
pricing = "prices.toml"

[endpoint]
backend = "vllm"
base_url = "http://127.0.0.1:8000/v1"
model = "served-model"
api_key_env = "MY_KEY_VAR"
max_concurrency = 6
timeout_s = 30.5

[roles.judge]
backend = "openai"
model = "gpt-4o"

[roles.planner]
backend = "simulated"

[grid]
topologies = [
  "single",
  { name = "best_of_n", n = 4, select = "verifier", label = "bo4+verifier" },
  { name = "refine", max_rounds = 3 },
]
budgets = [600, 1200]
seeds = [0, 1, 2]
policies = ["uniform", "difficulty_adaptive"]

[[suites]]
name = "words"
n = 16
seed = 3
length = "any"
letters = "bcd"

[[suites]]
name = "arith"
n = 5
depth = [2, 8]

[run]
concurrency = 3
temperature = 1.0
judge_with = "verifier"
reallocation = "judge_feedback"
feedback_threshold = 0.3
max_output = 40
split = { solver = 0.75, judge = 0.25 }
durable = false

[simulation]
skill = 0.5
difficulty_weight = 2.0
token_weight = 0.3
plan_bonus = 0.1
decompose_bonus = 0.2
feedback_bonus = 0.25
judge_accuracy = 0.9
answer_tokens = 64
judge_tokens = 32
logprob_base = 0.1
logprob_weight = 2.5
logprob_noise = 0.05
"""


def _with(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with ``value`` set at a dotted path (``run.concurrency``, ``grid.budgets``)."""
    data = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


# -- defaults and the full surface ----------------------------------------------------------------


def test_a_minimal_config_gets_the_documented_defaults() -> None:
    cfg = parse_config(MINIMAL)

    assert cfg.name == "ablation"
    assert cfg.output == Path("stratagem-out")
    assert cfg.pricing is None
    assert cfg.endpoint.backend == "local"
    assert cfg.endpoint.api_key_env == "OPENAI_API_KEY"
    assert cfg.roles == {}
    assert cfg.grid.seeds == [0]
    assert [p.display() for p in cfg.grid.policies] == ["uniform"]
    assert cfg.run.concurrency == 4
    assert cfg.run.judge_with == "llm"
    assert cfg.run.reallocation == "none"
    assert cfg.run.split is None
    assert cfg.run.durable is True
    assert cfg.simulation.judge_accuracy == 0.85
    assert cfg.suites[0].n == 10
    assert cfg.suites[0].seed == 0


def test_every_table_and_field_is_read_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "full.toml"
    path.write_text(FULL_TOML, encoding="utf-8")

    cfg = load_config(path)

    assert cfg.name == "full"
    assert cfg.output == Path("out/full")
    assert cfg.pricing == Path("prices.toml")
    assert cfg.endpoint == EndpointConfig(
        backend="vllm", base_url="http://127.0.0.1:8000/v1", model="served-model",
        api_key_env="MY_KEY_VAR", max_concurrency=6, timeout_s=30.5,
    )
    assert set(cfg.roles) == {"judge", "planner"}
    assert cfg.roles["judge"].model == "gpt-4o"
    assert cfg.roles["planner"].backend == "simulated"
    assert [t.display() for t in cfg.grid.topologies] == [
        "single", "bo4+verifier", "refine(max_rounds=3)"]
    assert cfg.grid.budgets == [600, 1200]
    assert cfg.grid.seeds == [0, 1, 2]
    assert [p.display() for p in cfg.grid.policies] == ["uniform", "difficulty_adaptive"]
    words, arith = cfg.suites
    assert (words.name, words.n, words.seed) == ("words", 16, 3)
    assert words.params() == {"length": "any", "letters": "bcd"}
    assert arith.params() == {"depth": [2, 8]}
    assert cfg.run.model_dump() == {
        "concurrency": 3, "temperature": 1.0, "judge_with": "verifier",
        "reallocation": "judge_feedback", "feedback_threshold": 0.3, "max_output": 40,
        "split": {"solver": 0.75, "judge": 0.25}, "durable": False,
    }
    assert cfg.simulation.model_dump() == {
        "skill": 0.5, "difficulty_weight": 2.0, "token_weight": 0.3, "plan_bonus": 0.1,
        "decompose_bonus": 0.2, "feedback_bonus": 0.25, "judge_accuracy": 0.9,
        "outcome_judge_accuracy": None, "answer_tokens": 64, "judge_tokens": 32,
        "logprob_base": 0.1, "logprob_weight": 2.5, "logprob_noise": 0.05,
    }


def test_a_dumped_config_validates_back_to_itself(tmp_path: Path) -> None:
    path = tmp_path / "full.toml"
    path.write_text(FULL_TOML, encoding="utf-8")
    cfg = load_config(path)

    again = parse_config(json.loads(cfg.model_dump_json()))

    assert again == cfg
    assert [t.params() for t in again.grid.topologies] == [
        {}, {"n": 4, "select": "verifier"}, {"max_rounds": 3}]
    assert again.grid.topologies[1].label == "bo4+verifier"


def test_the_config_is_frozen() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        cfg.name = "changed"  # type: ignore[misc]


# -- topologies: names and tables, labels and parameters ------------------------------------------


def test_topologies_may_be_names_or_tables() -> None:
    cfg = parse_config(_with("grid.topologies", [
        "single",
        {"name": "plan_solve"},
        {"name": "best_of_n", "n": 4, "select": "vote"},
        {"name": "best_of_n", "n": 8, "select": "verifier", "label": "bo8"},
    ]))

    topologies = cfg.grid.topologies
    assert all(isinstance(t, TopologyConfig) for t in topologies)
    assert [t.name for t in topologies] == ["single", "plan_solve", "best_of_n", "best_of_n"]
    assert [t.display() for t in topologies] == [
        "single", "plan_solve", "best_of_n(n=4,select=vote)", "bo8"]


def test_a_topology_label_is_not_a_parameter() -> None:
    topo = TopologyConfig.model_validate({"name": "refine", "max_rounds": 2, "label": "r2"})

    assert topo.params() == {"max_rounds": 2}
    assert topo.display() == "r2"
    assert TopologyConfig.model_validate(topo.model_dump()) == topo


def test_unlabelled_topology_display_is_stable_whatever_the_parameter_order() -> None:
    a = TopologyConfig.model_validate({"name": "best_of_n", "select": "vote", "n": 4})
    b = TopologyConfig.model_validate({"name": "best_of_n", "n": 4, "select": "vote"})

    assert a.display() == b.display() == "best_of_n(n=4,select=vote)"


@pytest.mark.parametrize("topologies", [["nope"], ["single", "nope"], [{"name": "nope"}]])
def test_an_unknown_topology_names_its_position(topologies: list[Any]) -> None:
    msg = _error(_with("grid.topologies", topologies))

    where = f"grid.topologies[{len(topologies) - 1}].name"
    assert msg.startswith(f"config: {where}: ")
    assert "best_of_n" in msg  # the message lists the known names


def test_a_topology_table_without_a_name_is_rejected() -> None:
    assert _error(_with("grid.topologies", [{"n": 4}])).startswith(
        "config: grid.topologies[0].name: Field required")


# -- errors name the field path -------------------------------------------------------------------

_CMP = {"treatment": {"topology": "refine"}, "control": {"topology": "single"}}

FIELD_ERRORS = [
    # (dotted path to set, value, expected path in the message)
    ("grid.budgets", [100, "many"], "grid.budgets[1]"),
    ("grid.budgets", [], "grid.budgets"),
    ("grid.seeds", [], "grid.seeds"),
    ("grid.seeds", [0, "x"], "grid.seeds[1]"),
    ("grid.policies", ["uniform", "greedy"], "grid.policies[1].name"),
    ("grid.policies", [{"name": "uniform", "floor": 1}], "grid.policies[0]"),
    ("grid.policies", [{"name": "difficulty_adaptive", "skip_above": 1.5}],
     "grid.policies[0].skip_above"),
    ("grid.policies", [{"name": "difficulty_adaptive", "skip_weight": 0.1}], "grid.policies[0]"),
    ("grid.policies", [{"name": "difficulty_adaptive", "exponent": 0}],
     "grid.policies[0].exponent"),
    ("grid.policies", [{"name": "difficulty_adaptive", "skip": 0.5}], "grid.policies[0].skip"),
    ("grid.policies", ["uniform", {"name": "uniform"}], "grid.policies"),
    ("grid.topologies", [], "grid.topologies"),
    ("endpoint.backend", "azure", "endpoint.backend"),
    ("endpoint.base_url", "ftp://example", "endpoint.base_url"),
    ("endpoint.max_concurrency", 0, "endpoint.max_concurrency"),
    ("endpoint.timeout_s", 0, "endpoint.timeout_s"),
    ("suites", [], "suites"),
    ("suites", [{"name": "arith", "n": 0}], "suites[0].n"),
    ("suites", [{"name": "arith"}, {"name": "words", "n": "ten"}], "suites[1].n"),
    ("suites", [{"name": "arith", "seed": "x"}], "suites[0].seed"),
    ("suites", [{"n": 3}], "suites[0].name"),
    ("suites", [{"name": "arith", "few_shot": 17}], "suites[0].few_shot"),
    ("suites", [{"name": "arith", "few_shot": -1}], "suites[0].few_shot"),
    ("run.concurrency", 0, "run.concurrency"),
    ("run.temperature", 2.5, "run.temperature"),
    ("run.judge_with", "human", "run.judge_with"),
    ("run.reallocation", "greedy", "run.reallocation"),
    ("run.feedback_threshold", 1.5, "run.feedback_threshold"),
    ("run.max_output", 0, "run.max_output"),
    ("run.split", {"solver": "most"}, "run.split.solver"),
    ("run.durable", "maybe", "run.durable"),
    ("simulation.judge_accuracy", 1.2, "simulation.judge_accuracy"),
    ("simulation.answer_tokens", 0, "simulation.answer_tokens"),
    ("simulation.judge_tokens", 0, "simulation.judge_tokens"),
    ("roles", {"judge": {"backend": "openai", "timeout_s": -1}}, "roles.judge.timeout_s"),
    ("roles", {"critic": {"backend": "openai"}}, "roles"),
    ("name", 3, "name"),
    ("output", 3, "output"),
    ("claim", {"statement": "s", "compare": _CMP}, "claim.id"),
    ("claim", {"id": "a", "statement": "s", "kind": "bigger", "compare": _CMP}, "claim.kind"),
    ("claim", {"id": "a", "statement": "s"}, "claim"),
    ("claim", {"id": "a", "statement": "s", "compare": {**_CMP, "control": {"seed": 1}}},
     "claim.compare.control.seed"),
    ("claim", {"id": "a", "statement": "s", "compare": {**_CMP, "control": {"budget": "9"}}},
     "claim.compare.control.budget"),
    ("claim", {"id": "a", "statement": "s", "compare": _CMP, "extra": 1}, "claim.extra"),
]


@pytest.mark.parametrize(("path", "value", "where"), FIELD_ERRORS,
                         ids=[f"{p}={v!r}" for p, v, _ in FIELD_ERRORS])
def test_an_invalid_field_names_its_path(path: str, value: Any, where: str) -> None:
    msg = _error(_with(path, value))

    assert msg.startswith(f"config: {where}: "), msg
    assert "\n" not in msg


def test_a_negative_budget_names_the_budget_and_its_value() -> None:
    msg = _error(_with("grid.budgets", [100, -5]))

    assert msg.startswith("config: grid.budgets")
    assert "budgets[1]: is -5" in msg
    assert "positive" in msg


def test_a_negative_budget_is_reported_at_its_field_path() -> None:
    assert _error(_with("grid.budgets", [100, -5])).startswith("config: grid.budgets[1]: ")


def test_an_unknown_role_is_named_with_the_known_ones() -> None:
    msg = _error(_with("roles", {"critic": {"backend": "openai"}}))

    assert "'critic'" in msg
    assert "planner, decomposer, solver, judge" in msg


@pytest.mark.parametrize("role", ["planner", "decomposer", "solver", "judge"])
def test_every_known_role_may_have_its_own_endpoint(role: str) -> None:
    cfg = parse_config(_with("roles", {role: {"backend": "simulated"}}))

    assert cfg.roles[role].backend == "simulated"


def test_several_problems_are_counted_after_the_first() -> None:
    data = _with("endpoint", {"backend": "azure", "timeout_s": -1})

    assert _error(data).endswith("(and 1 more problem(s))")


@pytest.mark.parametrize("missing", ["grid", "suites"])
def test_a_missing_required_table_is_named(missing: str) -> None:
    data = copy.deepcopy(MINIMAL)
    del data[missing]

    assert _error(data) == f"config: {missing}: Field required"


@pytest.mark.parametrize("where", ["", "endpoint", "roles.judge", "grid", "run", "simulation"])
def test_unknown_fields_are_rejected_in_every_strict_table(where: str) -> None:
    data = copy.deepcopy(MINIMAL)
    node = data
    for key in filter(None, where.split(".")):
        node = node.setdefault(key, {})
    node["typo_field"] = 1
    path = f"{where}.typo_field" if where else "typo_field"

    assert _error(data) == f"config: {path}: Extra inputs are not permitted"


def test_suite_and_topology_tables_keep_their_own_parameters() -> None:
    # Parameters are the builders' and suites' business: the config passes them through
    # (and the runner rejects unknown ones, see test_runner.py).
    cfg = parse_config({
        "grid": {"topologies": [{"name": "tree", "mode": "beam"}], "budgets": [1]},
        "suites": [{"name": "connectivity", "path_length": 4}],
    })

    assert cfg.grid.topologies[0].params() == {"mode": "beam"}
    assert cfg.suites[0].params() == {"path_length": 4}


# -- secrets come from the environment ------------------------------------------------------------


def test_the_api_key_is_read_from_the_named_variable_and_never_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_KEY_VAR", "sk-from-my-var-0123456789")
    monkeypatch.setenv("STRATAGEM_API_KEY", "sk-fallback-0123456789")
    endpoint = EndpointConfig(backend="openai", model="m", api_key_env="MY_KEY_VAR")

    assert endpoint.api_key() == "sk-from-my-var-0123456789"
    assert "sk-from" not in endpoint.model_dump_json()

    monkeypatch.delenv("MY_KEY_VAR")
    assert endpoint.api_key() == "sk-fallback-0123456789"
    monkeypatch.delenv("STRATAGEM_API_KEY")
    assert endpoint.api_key() is None


# -- files ----------------------------------------------------------------------------------------


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_config(missing)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path)


def test_a_toml_syntax_error_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[grid\nbudgets = [1]\n', encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    msg = str(info.value)
    assert msg.startswith(f"{path} is not valid TOML: ")
    assert "line 2" in msg


def test_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00\x81name")

    with pytest.raises(ConfigError, match=r"binary\.toml"):
        load_config(path)


def test_field_errors_from_a_file_start_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[grid]\ntopologies = ["single"]\nbudgets = [10, "x"]\n'
                    '[[suites]]\nname = "arith"\nn = 0\n', encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value).startswith(f"{path}: grid.budgets[1]: ")
    assert str(info.value).endswith("(and 1 more problem(s))")


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^my-source: grid: Field required"):
        parse_config({"suites": [{"name": "arith"}]}, source="my-source")



def test_a_policy_table_sets_its_parameters_and_its_label() -> None:
    data = {**MINIMAL, "grid": {**MINIMAL["grid"], "policies": [
        "uniform",
        {"name": "difficulty_adaptive", "skip_above": 0.25, "skip_weight": 0.1, "floor": 1},
        {"name": "difficulty_adaptive", "exponent": 2, "label": "steep"},
    ]}}
    uniform, skip, steep = parse_config(data).grid.policies
    assert [p.display() for p in (uniform, skip, steep)] == [
        "uniform", "difficulty_adaptive(floor=1,skip_above=0.25,skip_weight=0.1)", "steep"]
    policy = skip.build()
    assert isinstance(policy, DifficultyAdaptive)
    assert (policy.floor, policy.skip_above, policy.skip_weight) == (1, 0.25, 0.1)
    # hopeless tasks (difficulty above 0.25) get a tenth of an easy one's share
    assert policy.allocate([0.0, 0.9], 1100) == [1000, 100]
    assert steep.build() == DifficultyAdaptive(exponent=2)


def test_policy_labels_are_short_where_exact_and_distinct_where_not() -> None:
    def label(**params: float) -> str:
        data = {**MINIMAL, "grid": {**MINIMAL["grid"], "policies": [
            {"name": "difficulty_adaptive", **params}]}}
        return parse_config(data).grid.policies[0].display()

    assert label(exponent=2) == "difficulty_adaptive(exponent=2)"
    assert label(floor=0.1234567) == "difficulty_adaptive(floor=0.1234567)"
    assert label(floor=0.12345678) != label(floor=0.12345679)


def test_a_claim_table_is_read_and_names_its_comparison() -> None:
    cfg = parse_config(_with("claim", {"id": "d", "statement": "refine beats voting",
                                       "compare": _CMP}))
    assert cfg.claim is not None and cfg.claim.kind == "better"
    assert cfg.claim.pair_keys() == ("suite", "task_id", "seed", "policy", "budget")
    assert parse_config(MINIMAL).claim is None
