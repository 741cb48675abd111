"""Ablations on coordination at matched budgets: config, runner, executors, tidy results."""

from __future__ import annotations

from stratagem.ablation._config import (
    MAX_BUDGET,
    AblationConfig,
    EndpointConfig,
    GridConfig,
    RunSettings,
    SimulationConfig,
    SuiteConfig,
    TopologyConfig,
    load_config,
    parse_config,
)
from stratagem.ablation._executors import (
    EXECUTORS,
    EndpointLimiter,
    Executor,
    LocalExecutor,
    RayExecutor,
    executor_for,
)
from stratagem.ablation._report import report_ablation
from stratagem.ablation._results import ResultsStore, records_frame
from stratagem.ablation._runner import (
    AblationOutcome,
    BackendWrapper,
    PlannedRun,
    RunOutcome,
    Sweep,
    check_output_folder,
    needs_retry,
    plan_runs,
    run_ablation,
)
from stratagem.records import ROLE_COLUMNS, RunRecord

__all__ = [
    "EXECUTORS",
    "MAX_BUDGET",
    "ROLE_COLUMNS",
    "AblationConfig",
    "AblationOutcome",
    "BackendWrapper",
    "EndpointConfig",
    "EndpointLimiter",
    "Executor",
    "GridConfig",
    "LocalExecutor",
    "PlannedRun",
    "RayExecutor",
    "ResultsStore",
    "RunOutcome",
    "RunRecord",
    "RunSettings",
    "SimulationConfig",
    "SuiteConfig",
    "Sweep",
    "TopologyConfig",
    "check_output_folder",
    "executor_for",
    "load_config",
    "needs_retry",
    "parse_config",
    "plan_runs",
    "records_frame",
    "report_ablation",
    "run_ablation",
]
