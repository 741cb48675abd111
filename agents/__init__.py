"""Model access, the four agent roles, their prompts, and the embedded local model server.

:class:`ModelClient` is the one place that makes LLM calls; every backend (an
OpenAI-compatible server, the embedded model, a test double) sits behind it.
"""

from __future__ import annotations

from stratagem.agents._answers import answer_key, answers_match, normalize_answer, parse_number
from stratagem.agents._backend import (
    CAPABILITIES,
    BackendCapabilities,
    ChatBackend,
    ChatRequest,
    ChatResponse,
    Message,
    capabilities_for,
    detect_backend,
)
from stratagem.agents._client import Completion, ModelClient, RetryPolicy
from stratagem.agents._decomposer import (
    Decomposer,
    Decomposition,
    LLMDecomposer,
    Subtask,
    SubtaskDict,
)
from stratagem.agents._defaults import default_backend
from stratagem.agents._endpoints import (
    BackendName,
    EndpointConfig,
    build_backend,
    check_endpoint,
)
from stratagem.agents._judge import (
    Checker,
    Judge,
    LLMJudge,
    PairwiseVerdict,
    Verdict,
    VerdictDict,
    VerifierJudge,
    parse_pairwise,
    parse_verdict,
)
from stratagem.agents._knockout import KnockoutResult, knockout
from stratagem.agents._local import (
    LOCAL_MODEL_ALIAS,
    LocalModelServer,
    ensure_local_server,
    remove_orphaned_workdirs,
    smollm2_model_path,
)
from stratagem.agents._openai import OpenAIBackend, usage_from_openai
from stratagem.agents._planner import DEFAULT_ROLES, LLMPlanner, Mode, Plan, PlanDict, Planner
from stratagem.agents._prompts import (
    DECOMPOSER_PROMPT,
    JUDGE_OUTCOME_PROMPT,
    JUDGE_PAIRWISE_PROMPT,
    JUDGE_POINTWISE_PROMPT,
    PLANNER_PROMPT,
    REPAIR_PROMPT,
    SOLVER_PROMPT,
    PromptTemplate,
)
from stratagem.agents._solver import LLMSolver, Solution, Solver, extract_answer
from stratagem.agents._structured import (
    RoleOutput,
    Structured,
    complete_structured,
    extract_json,
    parse_error_completions,
)

__all__ = [
    "CAPABILITIES",
    "DECOMPOSER_PROMPT",
    "DEFAULT_ROLES",
    "JUDGE_OUTCOME_PROMPT",
    "JUDGE_PAIRWISE_PROMPT",
    "JUDGE_POINTWISE_PROMPT",
    "LOCAL_MODEL_ALIAS",
    "PLANNER_PROMPT",
    "REPAIR_PROMPT",
    "SOLVER_PROMPT",
    "BackendCapabilities",
    "BackendName",
    "ChatBackend",
    "ChatRequest",
    "ChatResponse",
    "Checker",
    "Completion",
    "Decomposer",
    "Decomposition",
    "EndpointConfig",
    "Judge",
    "KnockoutResult",
    "LLMDecomposer",
    "LLMJudge",
    "LLMPlanner",
    "LLMSolver",
    "LocalModelServer",
    "Message",
    "Mode",
    "ModelClient",
    "OpenAIBackend",
    "PairwiseVerdict",
    "Plan",
    "PlanDict",
    "Planner",
    "PromptTemplate",
    "RetryPolicy",
    "RoleOutput",
    "Solution",
    "Solver",
    "Structured",
    "Subtask",
    "SubtaskDict",
    "Verdict",
    "VerdictDict",
    "VerifierJudge",
    "answer_key",
    "answers_match",
    "build_backend",
    "capabilities_for",
    "check_endpoint",
    "complete_structured",
    "default_backend",
    "detect_backend",
    "ensure_local_server",
    "extract_answer",
    "extract_json",
    "knockout",
    "normalize_answer",
    "parse_error_completions",
    "parse_number",
    "parse_pairwise",
    "parse_verdict",
    "remove_orphaned_workdirs",
    "smollm2_model_path",
    "usage_from_openai",
]
