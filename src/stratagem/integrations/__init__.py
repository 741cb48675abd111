"""Adapters that bring apps stratagem did not build into its ledger, budgets and reports.

* :mod:`stratagem.integrations.langchain` (extra ``langchain``): a callback handler that
  records every model call of an unmodified LangGraph/LangChain app, and :func:`budgeted`
  chat models that enforce the budget call by call.
* :mod:`stratagem.integrations.otel` (extra ``otel``): the ledger as OpenTelemetry GenAI spans.

Each submodule needs its extra and says so when it is missing; this package imports neither,
so the base install does not depend on them.
"""

from __future__ import annotations

__all__: list[str] = []
