"""The ledger and budgets for LangChain and LangGraph apps stratagem did not build.

* :class:`StratagemCallbackHandler` (and :class:`AsyncStratagemCallbackHandler`): observe.
  Pass it as ``config={"callbacks": [handler]}`` to an unmodified compiled graph or any
  Runnable: one ledger row per model call, attributed to node, branch and role.
* :func:`budgeted`: enforce. Wrap a chat model so each attempt is reserved, its output cap
  clamped to what the role has left, its usage committed, and every retry recorded.
* :func:`end_on_budget`: let a node end the run with what it has when the budget runs out.

What a callback cannot see: retries inside the provider SDK (``ChatOpenAI(max_retries=2)``)
happen below LangChain's callbacks, so a handler records the logical call once; a budgeted
model turns those retries off and makes them itself, so each attempt is a row.

Needs the ``langchain`` extra: ``pip install 'stratagem[langchain]'``.
"""

from __future__ import annotations

from stratagem.integrations._requires import missing_extra

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - langchain-core comes with langgraph
    raise missing_extra("langchain", "langchain-core", exc) from exc

from stratagem.integrations._lc_budgeted import BudgetedChatModel, budgeted, end_on_budget
from stratagem.integrations._lc_handler import (
    AsyncStratagemCallbackHandler,
    StratagemCallbackHandler,
)

__all__ = [
    "AsyncStratagemCallbackHandler",
    "BudgetedChatModel",
    "StratagemCallbackHandler",
    "budgeted",
    "end_on_budget",
]
