"""Ledger, durable store, budgets and reservations, pricing, allocation policies, token counting."""

from __future__ import annotations

from stratagem.budgets._account import Account, BudgetView, OpenCall, Replayed
from stratagem.budgets._aggregate import UsageTotals, entry_key, group_entries, sum_entries
from stratagem.budgets._budget import Budget, Reservation
from stratagem.budgets._calibration import CALIBRATION, TokenCalibration, TokenScale
from stratagem.budgets._compute_optimal import (
    CalibrationTable,
    ComputeOptimal,
    PoolSample,
    ProbeSignal,
    StrategyChoice,
    logprob_edges,
    option_outcome,
    probe_bin,
    probe_logprob,
    record_choice,
)
from stratagem.budgets._consistency import (
    AdaptiveConsistency,
    ConsistencyDecision,
    majority_probability,
)
from stratagem.budgets._entries import LedgerEntry, Transfer, new_call_id
from stratagem.budgets._events import AccountEvent, BudgetThreshold, CallRecorded, TransferRecorded
from stratagem.budgets._ledger import TokenLedger
from stratagem.budgets._policies import (
    AllocationPolicy,
    DifficultyAdaptive,
    FeedbackDecision,
    JudgeFeedback,
    ReallocationPolicy,
    Uniform,
    apportion,
)
from stratagem.budgets._pricing import BUILTIN_PRICES, PRICES_AS_OF, ModelPrice, Pricing
from stratagem.budgets._store import SCHEMA_VERSION, LedgerStore
from stratagem.budgets._tokens import (
    TIKTOKEN_FILES,
    TIKTOKEN_FILES_VERSION,
    TiktokenFile,
    chat_tokens_bound,
    count_chat_tokens,
    count_text_tokens,
    encoding_name_for_model,
    estimate_usage,
    get_encoding,
    seed_tiktoken_cache,
)
from stratagem.budgets._usage import Usage

__all__ = [
    "BUILTIN_PRICES",
    "CALIBRATION",
    "PRICES_AS_OF",
    "SCHEMA_VERSION",
    "TIKTOKEN_FILES",
    "TIKTOKEN_FILES_VERSION",
    "Account",
    "AccountEvent",
    "AdaptiveConsistency",
    "AllocationPolicy",
    "Budget",
    "BudgetThreshold",
    "BudgetView",
    "CalibrationTable",
    "CallRecorded",
    "ComputeOptimal",
    "ConsistencyDecision",
    "DifficultyAdaptive",
    "FeedbackDecision",
    "JudgeFeedback",
    "LedgerEntry",
    "LedgerStore",
    "ModelPrice",
    "OpenCall",
    "PoolSample",
    "Pricing",
    "ProbeSignal",
    "ReallocationPolicy",
    "Replayed",
    "Reservation",
    "StrategyChoice",
    "TiktokenFile",
    "TokenCalibration",
    "TokenLedger",
    "TokenScale",
    "Transfer",
    "TransferRecorded",
    "Uniform",
    "Usage",
    "UsageTotals",
    "apportion",
    "chat_tokens_bound",
    "count_chat_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
    "entry_key",
    "estimate_usage",
    "get_encoding",
    "group_entries",
    "logprob_edges",
    "majority_probability",
    "new_call_id",
    "option_outcome",
    "probe_bin",
    "probe_logprob",
    "record_choice",
    "seed_tiktoken_cache",
    "sum_entries",
]
