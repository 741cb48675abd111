"""Coordination graphs: state and reducers, topologies, durable run and resume.

Every topology is a builder returning a compiled LangGraph graph over :class:`RunState`
with :class:`RunContext` as its runtime context, and an explicit recursion limit:

* :func:`single` - one solver call (the baseline);
* :func:`plan_solve` - planner, then solver;
* :func:`decompose_solve` - decomposer, subtask solvers (parallel or chained), aggregation;
* :func:`best_of_n` - N parallel samples, chosen by vote, judge, knockout or verifier;
* :func:`refine` - solve, critique, revise;
* :func:`tree` - beam search or MCTS with the judge as value function;
* :func:`adaptive` - the planner picks the mode and the budget split;
* :func:`adaptive_consistency` - majority voting that stops once the majority is clear.

Run one with :func:`run` (or :func:`arun`), finish a crashed one with :func:`resume`; or
describe one run with a :class:`RunSpec` and :func:`run_task` it (what ``stratagem run`` and
the ablation runner do). Checkpoints are written through :class:`RedactingSerializer` (no
secret in clear text).
:data:`TOPOLOGIES` maps each name to its builder; :func:`check_params` refuses a parameter a
topology does not take, or a value of the wrong type, before anything runs.
"""

from __future__ import annotations

from stratagem.graphs._adaptive import adaptive, apply_split
from stratagem.graphs._checkpoint import RedactingSerializer, redact_state, sqlite_checkpointer
from stratagem.graphs._common import (
    accepted,
    answer_key,
    best_candidate,
    finalize_node,
    majority_vote,
    normalize_answer,
    run_context,
    stratagem_node,
)
from stratagem.graphs._consistency import adaptive_consistency
from stratagem.graphs._context import DEFAULT_SPLITS, RunContext, Verifier
from stratagem.graphs._decompose import decompose_solve
from stratagem.graphs._loops import best_of_n, refine
from stratagem.graphs._run import RunResult, aresume, arun, resume, run
from stratagem.graphs._simple import plan_solve, single
from stratagem.graphs._state import BranchInput, Candidate, CandidateVerdict, RunState, add_counts
from stratagem.graphs._strategic import compute_optimal
from stratagem.graphs._stream import (
    CustomEvent,
    NodeFinished,
    NodeStarted,
    RunEvent,
    RunStopped,
    astream,
    stream,
)
from stratagem.graphs._task import RunSpec, arun_task, run_task, split_budget
from stratagem.graphs._topologies import (
    DESIGN_ROLE_ORDER,
    TOPOLOGIES,
    check_params,
    design_roles,
    resolve_topology,
    topology_params,
)
from stratagem.graphs._tree import tree

__all__ = [
    "DEFAULT_SPLITS",
    "DESIGN_ROLE_ORDER",
    "TOPOLOGIES",
    "BranchInput",
    "Candidate",
    "CandidateVerdict",
    "CustomEvent",
    "NodeFinished",
    "NodeStarted",
    "RedactingSerializer",
    "RunContext",
    "RunEvent",
    "RunResult",
    "RunSpec",
    "RunState",
    "RunStopped",
    "Verifier",
    "accepted",
    "adaptive",
    "adaptive_consistency",
    "add_counts",
    "answer_key",
    "apply_split",
    "aresume",
    "arun",
    "arun_task",
    "astream",
    "best_candidate",
    "best_of_n",
    "check_params",
    "compute_optimal",
    "decompose_solve",
    "design_roles",
    "finalize_node",
    "majority_vote",
    "normalize_answer",
    "plan_solve",
    "redact_state",
    "refine",
    "resolve_topology",
    "resume",
    "run",
    "run_context",
    "run_task",
    "single",
    "split_budget",
    "sqlite_checkpointer",
    "stratagem_node",
    "stream",
    "topology_params",
    "tree",
]
