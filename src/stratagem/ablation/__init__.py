"""Ablations on coordination at matched budgets: config, runner, tidy results."""

from __future__ import annotations

from stratagem.ablation._config import (
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
from stratagem.ablation._records import ROLE_COLUMNS, RunRecord
from stratagem.ablation._results import ResultsStore, records_frame
from stratagem.ablation._runner import AblationOutcome, PlannedRun, plan_runs, run_ablation

__all__ = [
    "ROLE_COLUMNS",
    "AblationConfig",
    "AblationOutcome",
    "EndpointConfig",
    "GridConfig",
    "PlannedRun",
    "ResultsStore",
    "RunRecord",
    "RunSettings",
    "SimulationConfig",
    "SuiteConfig",
    "TopologyConfig",
    "load_config",
    "parse_config",
    "plan_runs",
    "records_frame",
    "run_ablation",
]
