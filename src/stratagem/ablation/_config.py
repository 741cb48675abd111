"""The ablation config: a TOML file validated by pydantic; errors name the field path."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stratagem.agents import EndpointConfig
from stratagem.attribution import Claim
from stratagem.budgets import (
    AdaptiveConsistency,
    AllocationPolicy,
    ComputeOptimal,
    DifficultyAdaptive,
    Uniform,
)
from stratagem.errors import ConfigError
from stratagem.simulate import SimEffects
from stratagem.tasks import MAX_FEW_SHOT

__all__ = [
    "AblationConfig",
    "EndpointConfig",
    "GridConfig",
    "PolicyConfig",
    "RunSettings",
    "SimulationConfig",
    "SuiteConfig",
    "TopologyConfig",
    "load_config",
    "parse_config",
]

PolicyName = Literal["uniform", "difficulty_adaptive", "adaptive_consistency",
                     "compute_optimal"]
TOPOLOGY_NAMES = ("single", "plan_solve", "decompose_solve", "best_of_n", "refine", "tree",
                  "adaptive", "adaptive_consistency")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Numbers and switches are strict: TOML has them, so a quoted one ("600", "true") is a mistake
# to name, not a value to convert. A float field still takes an integer (temperature = 1).
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Bool = Annotated[bool, Field(strict=True)]

ROLE_NAMES = ("planner", "decomposer", "solver", "judge")
_NEEDS_NO_MODEL = ("local", "simulated")


class TopologyConfig(_Strict):
    """One topology of the grid, with its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    """A builder in ``stratagem.graphs`` (``single``, ``plan_solve``, ``decompose_solve``,
    ``best_of_n``, ``refine``, ``tree``, ``adaptive``), or your own as ``"module:function"``
    (importable from where ``stratagem ablate`` runs; give ``[run] split`` the shares of its
    roles, or it runs with the total as its only cap)."""

    @field_validator("name")
    @classmethod
    def _known_topology(cls, value: str) -> str:
        if value in TOPOLOGY_NAMES:
            return value
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"unknown topology {value!r}: use one of "
                             f"{', '.join(TOPOLOGY_NAMES)}, or your own as 'module:function'")
        return value
    label: str | None = None
    """How it appears in results (default: the name and its parameters)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """This topology's solver temperature, when it must differ from ``[run] temperature``
    (``0``: greedy). Unset, every topology samples at ``[run] temperature``."""

    def params(self) -> dict[str, Any]:
        """The builder's keyword arguments."""
        return dict(self.model_extra or {})

    def display(self) -> str:
        """The label used in results."""
        shown = {k: str(v) for k, v in sorted(self.params().items())}
        if self.temperature is not None:  # unset: labels (and run ids) stay as they were
            shown["temperature"] = _number(self.temperature)
        return self.label or _label(self.name, shown)

    def sampling_temperature(self, run: RunSettings) -> float:
        """The temperature its solver calls use: its own, else ``run.temperature``."""
        return run.temperature if self.temperature is None else self.temperature


class SuiteConfig(_Strict):
    """A task suite and how many tasks to draw from it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    """``arith``, ``connectivity``, ``words``, ``humaneval`` or ``jsonl``."""
    n: Int = Field(default=10, ge=1, le=100_000)
    """Tasks to draw."""
    seed: Int = 0
    """Seed of the draw."""
    few_shot: Int = Field(default=0, ge=0, le=MAX_FEW_SHOT)
    """Worked examples of the suite shown to the solver before each task (few-shot
    prompting); never one of the tasks drawn."""

    def params(self) -> dict[str, Any]:
        """The suite's parameters (e.g. ``depth``, ``length``, ``path``)."""
        return dict(self.model_extra or {})


MAX_BUDGET = 10**12
"""The largest budget accepted, in tokens (beyond it the sums lose precision as floats)."""


def _positive_budget(value: int) -> int:
    if value < 1:
        raise ValueError(f"is {value}: a budget is a positive number of tokens per task")
    if value > MAX_BUDGET:
        raise ValueError(f"is {value}: budgets above {MAX_BUDGET:,} tokens per task are not "
                         "supported")
    return value


class PolicyConfig(_Strict):
    """An allocation policy of the grid, with its parameters.

    ``"uniform"`` takes none; ``"difficulty_adaptive"`` takes those of
    :class:`~stratagem.budgets.DifficultyAdaptive` (``floor``, ``exponent``, ``skip_above``,
    ``skip_weight``); ``"adaptive_consistency"`` those of
    :class:`~stratagem.budgets.AdaptiveConsistency` (``threshold``, ``batch``,
    ``min_samples``, ``criterion``; its cap on samples is each voting topology's ``n``);
    ``"compute_optimal"`` those of :class:`~stratagem.budgets.ComputeOptimal` (``probe``,
    ``samples``, ``calibration``, ``cap``, ``prior``, ``threshold``, ``probe_signal``,
    ``logprob_bins``, ``options``, ``rounds``). Defaults are the classes'.
    """

    name: PolicyName
    """``uniform``, ``difficulty_adaptive`` or ``adaptive_consistency``."""
    label: str | None = None
    """How it appears in results (default: the name and its parameters)."""
    floor: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Weight every task gets regardless of difficulty."""
    exponent: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """> 1 concentrates budget on the hardest tasks, < 1 spreads it."""
    skip_above: float | None = Field(default=None, ge=0, le=1)
    """Tasks harder than this are judged hopeless and get ``skip_weight``."""
    skip_weight: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Weight of a hopeless task (default: ``floor``)."""
    threshold: float | None = Field(default=None, ge=0.5, lt=1)
    """adaptive_consistency: the probability of the leader being the majority that stops."""
    batch: int | None = Field(default=None, ge=1, le=256)
    """adaptive_consistency: samples per round."""
    min_samples: int | None = Field(default=None, ge=1, le=256)
    """adaptive_consistency: never stop before this many samples."""
    criterion: Literal["beta", "dirichlet"] | None = None
    """adaptive_consistency: ``beta`` or ``dirichlet``."""
    probe: int | None = Field(default=None, ge=1, le=16)
    """compute_optimal: probe samples per query."""
    samples: list[int] | None = Field(default=None, min_length=1)
    """compute_optimal: sample caps of the options past the probe."""
    calibration: int | None = Field(default=None, ge=1, le=10_000)
    """compute_optimal: calibration tasks per suite, drawn apart from the evaluated ones."""
    cap: float | None = Field(default=None, ge=1, allow_inf_nan=False)
    """compute_optimal: a run's hard cap, as a multiple of the cell's budget per task."""
    prior: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """compute_optimal: shrinkage weight of the calibration table."""
    probe_signal: Literal["agreement", "logprob", "both"] | None = None
    """compute_optimal: the probe's bins from answer agreement, token log-probability, or both."""
    logprob_bins: int | None = Field(default=None, ge=1, le=10)
    """compute_optimal: quantile bins of the probe's log-probability."""
    options: list[Literal["stop", "sequential", "vote", "ac", "refine", "decompose"]] | None = \
        Field(default=None, min_length=1)
    """compute_optimal: the kinds of option offered (``refine``, ``decompose``: opt-in)."""
    rounds: list[int] | None = Field(default=None, min_length=1)
    """compute_optimal: revisions of its ``refine:R`` options."""

    _OWN: ClassVar[dict[str, tuple[str, ...]]] = {
        "uniform": (),
        "difficulty_adaptive": ("floor", "exponent", "skip_above", "skip_weight"),
        "adaptive_consistency": ("threshold", "batch", "min_samples", "criterion"),
        "compute_optimal": ("probe", "samples", "calibration", "cap", "prior", "threshold",
                            "probe_signal", "logprob_bins", "options", "rounds"),
    }

    def params(self) -> dict[str, Any]:
        """The parameters that were set."""
        names = dict.fromkeys(n for names in self._OWN.values() for n in names)
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _only_own_parameters(self) -> PolicyConfig:
        foreign = [k for k in self.params() if k not in self._OWN[self.name]]
        if foreign:
            takes = ", ".join(self._OWN[self.name]) or "no parameters"
            raise ValueError(f"{self.name} takes {takes}, got {', '.join(foreign)}")
        if self.skip_weight is not None and self.skip_above is None:
            raise ValueError("skip_weight needs skip_above (which tasks count as hopeless)")
        return self

    def build(self) -> AllocationPolicy:
        """The policy object."""
        if self.name == "uniform":
            return Uniform()
        if self.name == "adaptive_consistency":
            return AdaptiveConsistency(**self.params())
        if self.name == "compute_optimal":
            params = self.params()
            for name in ("samples", "options", "rounds"):
                if name in params:
                    params[name] = tuple(params[name])
            return ComputeOptimal(**params)
        return DifficultyAdaptive(**self.params())

    def display(self) -> str:
        """The label used in results."""
        return self.label or _label(self.name, {k: _shown(v) for k, v in self.params().items()})


def _label(name: str, params: dict[str, str]) -> str:
    # Labels feed cell names and run ids: keep their format stable.
    if not params:
        return name
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "/".join(_shown(v) for v in value)
    return _number(value)


def _number(value: float) -> str:
    # Short (":g") where that is exact - the labels, and so the run ids, of ablations made
    # before policy tables existed stay the same - and the full repr where it is not.
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _uniform_only() -> list[PolicyConfig]:
    return [PolicyConfig(name="uniform")]


class GridConfig(_Strict):
    """The ablation grid: topologies x budgets x allocation policies x seeds."""

    topologies: list[TopologyConfig] = Field(min_length=1)
    """Topologies to compare (names, or tables with parameters)."""
    budgets: list[Annotated[Int, AfterValidator(_positive_budget)]] = Field(min_length=1)
    """Target tokens per task: each is a matched-compute cell."""
    seeds: list[Int] = Field(default_factory=lambda: [0], min_length=1)
    """Seeds: each runs every task again."""
    policies: list[PolicyConfig] = Field(default_factory=_uniform_only, min_length=1)
    """How a cell's tokens are split between its tasks (names, or tables with parameters)."""

    @field_validator("topologies", "policies", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("policies")
    @classmethod
    def _distinct_policies(cls, value: list[PolicyConfig]) -> list[PolicyConfig]:
        labels = [p.display() for p in value]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} appear(s) twice: give each a distinct "
                             "label so their cells stay apart")
        return value


def _share(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"is {value}: role shares are non-negative weights (normalized to "
                         "the budget), e.g. split = {solver = 0.8, judge = 0.2}")
    return value


class RunSettings(_Strict):
    """How each run is carried out."""

    concurrency: Int = Field(default=4, ge=1, le=4096)
    """Runs in flight at once."""
    temperature: Float = Field(default=0.8, ge=0, le=2)
    """Sampling temperature of every solver call of every topology (``0``: greedy); a
    topology table's own ``temperature`` overrides it for that topology."""
    judge_with: Literal["llm", "verifier"] = "llm"
    """Judge by the model, or by the task's exact checker (the 'perfect verifier' ablation)."""
    reallocation: Literal["none", "judge_feedback"] = "none"
    """Move budget between roles on the judge's signal."""
    feedback_threshold: Float = Field(default=0.5, ge=0, le=1)
    """Judge confidence below which judge_feedback moves budget."""
    max_output: Int = Field(default=256, ge=1)
    """Output cap per solver call (budgets clamp it further)."""
    split: dict[str, Annotated[float, Field(strict=True), AfterValidator(_share)]] | None = None
    """Role shares of each run's budget (default per topology): non-negative weights, at
    least one of them positive."""
    durable: Bool = True
    """Checkpoint every run so a crash or Ctrl-C resumes without repeating finished work."""

    @field_validator("split")
    @classmethod
    def _one_positive_share(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        # Any role name: a topology of the user's own may have roles of its own.
        if value is None:
            return None
        if not any(share > 0 for share in value.values()):
            raise ValueError("needs at least one positive share, e.g. {solver = 1.0}")
        return value


SimulationConfig = SimEffects
"""Effects planted in the simulated backend: the ``[simulation]`` table is validated as
:class:`stratagem.simulate.SimEffects` itself (one definition, defaults included)."""


class AblationConfig(_Strict):
    """A whole ablation: what to run, where, and where to write it."""

    name: str = "ablation"
    """A name for the report."""
    output: Path = Path("stratagem-out")
    """Output folder (results, ledger, checkpoints, report)."""
    endpoint: EndpointConfig = EndpointConfig()
    """The default endpoint of every role."""
    roles: dict[str, EndpointConfig] = Field(default_factory=dict)
    """Per-role endpoint overrides (e.g. a stronger judge)."""
    grid: GridConfig
    """The grid."""
    suites: list[SuiteConfig] = Field(min_length=1)
    """Task suites."""
    run: RunSettings = RunSettings()
    """Run settings."""
    simulation: SimulationConfig = SimulationConfig()
    """Planted effects, when the backend is ``simulated``."""
    pricing: Path | None = None
    """A TOML price file, on top of the built-in prices."""
    claim: Claim | None = None
    """The research claim this ablation tests and the comparison that decides it (the
    report's Findings); ``None``: an ablation without a claim."""

    def with_endpoint(self, *, backend: str | None = None, base_url: str | None = None,
                      model: str | None = None) -> AblationConfig:
        """This config with its default endpoint's backend, URL or model replaced (the
        command line's ``--backend/--base-url/--model``: a claim rerun on another model
        without editing TOML). Per-role overrides in ``[roles]`` stay as they are.

        Raises:
            ConfigError: For a value the endpoint refuses (the message names the option).
        """
        given = {k: v for k, v in (("backend", backend), ("base_url", base_url),
                                   ("model", model)) if v is not None}
        if not given:
            return self
        try:
            endpoint = EndpointConfig.model_validate(
                {**self.endpoint.model_dump(exclude_unset=True), **given})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "endpoint"
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{where}: {msg}") from exc
        return self.model_copy(update={"endpoint": endpoint})

    @field_validator("roles", mode="before")
    @classmethod
    def _known_roles(cls, value: Any) -> Any:
        # Before the endpoints are validated: an unknown role is the mistake to name first.
        for role in value if isinstance(value, dict) else ():
            if role not in ROLE_NAMES:
                raise ValueError(f"unknown role {role!r}: use planner, decomposer, solver, judge")
        return value


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_config(path: str | Path, *, base_dir: Path | None = None) -> AblationConfig:
    """Read and validate an ablation config.

    Relative paths in it (``output``, ``pricing``, JSONL suites) are resolved against the
    current directory, as a user typing them would expect.

    Raises:
        ConfigError: For a missing file, invalid TOML, or an invalid field (the message names
            the field path, e.g. ``grid.budgets[1]``, and what is wrong).
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(path.glob("*.toml"))
        example = inside[0] if inside else path / "ablation.toml"
        raise ConfigError(f"{path} is a directory; pass the TOML config file, e.g. {example}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass the path of a TOML file "
                          "(see examples/quickstart.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text file: {exc}") from exc
    return parse_config(data, source=str(path))


_NUMBER_ERRORS = ("int_type", "float_type", "bool_type")


def parse_config(data: dict[str, Any], *, source: str = "config") -> AblationConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    try:
        return AblationConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        if isinstance(first.get("input"), str) and first["type"] in _NUMBER_ERRORS:
            msg += f", got the string {first['input']!r}: write it without quotes"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_where(tuple(first['loc']))}: {msg}{more}") from exc
