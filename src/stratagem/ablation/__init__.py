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
    WorkerSecrets,
    cell_batches,
    check_ray_address,
    executor_for,
    run_in_memory,
    shared_endpoint_limits,
)
from stratagem.ablation._report import AblationReport, report_ablation, write_report
from stratagem.ablation._results import _VERSION as RESULTS_SCHEMA_VERSION
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
from stratagem.ablation._session import (
    Ablation,
    aablate,
    ablate,
    load,
    progress_bar,
    resolve_config,
)
from stratagem.records import ROLE_COLUMNS, RunRecord

__all__ = [
    "EXECUTORS",
    "MAX_BUDGET",
    "RESULTS_SCHEMA_VERSION",
    "ROLE_COLUMNS",
    "Ablation",
    "AblationConfig",
    "AblationOutcome",
    "AblationReport",
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
    "WorkerSecrets",
    "aablate",
    "ablate",
    "cell_batches",
    "check_output_folder",
    "check_ray_address",
    "executor_for",
    "load",
    "load_config",
    "needs_retry",
    "parse_config",
    "plan_runs",
    "progress_bar",
    "records_frame",
    "report_ablation",
    "resolve_config",
    "run_ablation",
    "run_in_memory",
    "shared_endpoint_limits",
    "write_report",
]
