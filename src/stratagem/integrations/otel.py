"""The ledger as OpenTelemetry GenAI spans (semantic conventions, Development status).

Mapping::

    run      -> invoke_workflow span         (transfers are its span events)
    role     -> invoke_agent span            (gen_ai.agent.name = the role)
    attempt  -> chat span, one per ledger row: gen_ai.operation.name, gen_ai.provider.name,
                gen_ai.request.model, gen_ai.response.model, gen_ai.usage.input_tokens,
                gen_ai.usage.output_tokens, gen_ai.usage.cache_read.input_tokens (when known),
                error.type (a failed attempt), and stratagem.* for what the conventions
                lack (node, branch, attempt, usage_source, cost_usd, status, call_id, ...)

Each span is one *attempt* (the conventions have not settled attempts versus operations for
retries), so token sums over the spans equal the provider's bill. Times come from the rows;
every string is redacted. Needs the ``otel`` extra: ``pip install 'stratagem[otel]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from stratagem.integrations._requires import missing_extra

try:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("otel", "opentelemetry-sdk", exc) from exc

from stratagem._redact import redact
from stratagem.budgets import Account, AccountEvent, CallRecorded, LedgerEntry, TokenLedger

__all__ = ["chat_attributes", "export_ledger", "ledger_spans", "live_spans", "otlp_exporter"]

_SCOPE = "stratagem"


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _end_ns(row: LedgerEntry) -> int:
    return _ns(row.started_at) + int(row.latency_s * 1_000_000_000)


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in attrs.items()
            if v is not None}


def chat_attributes(row: LedgerEntry) -> dict[str, Any]:
    """The attributes of one attempt's ``chat`` span."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": row.backend,
        "gen_ai.request.model": row.model,
        "gen_ai.response.model": row.model,
        "gen_ai.usage.input_tokens": row.prompt_tokens,
        "gen_ai.usage.output_tokens": row.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": row.cached_tokens,
        "gen_ai.request.max_tokens": row.cap_sent,
        "gen_ai.response.id": row.request_id,
        "stratagem.call_id": row.call_id,
        "stratagem.run_id": row.run_id,
        "stratagem.role": row.role,
        "stratagem.node": row.node or None,
        "stratagem.branch": row.branch,
        "stratagem.task_id": row.task_id,
        "stratagem.attempt": row.attempt,
        "stratagem.status": row.status,
        "stratagem.usage_source": row.usage_source,
        "stratagem.reasoning_tokens": row.reasoning_tokens,
        "stratagem.cost_usd": row.cost_usd,
    }
    if row.status != "ok":
        kind = (row.error or "").partition(":")[0].strip()
        attrs["error.type"] = kind if kind and " " not in kind else row.status
    return _clean(attrs)


def _emit(tracer: trace.Tracer, rows: Sequence[LedgerEntry], account: Account | None,
          ledger: TokenLedger | None) -> None:
    by_run: dict[str, list[LedgerEntry]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    for run_id, run_rows in by_run.items():
        start = min(_ns(r.started_at) for r in run_rows)
        end = max(_end_ns(r) for r in run_rows)
        workflow = tracer.start_span(
            "invoke_workflow stratagem", start_time=start,
            attributes=_clean({"gen_ai.operation.name": "invoke_workflow",
                               "stratagem.run_id": run_id}))
        if ledger is not None:
            for t in ledger.transfers(run_id):
                workflow.add_event("stratagem.transfer", timestamp=_ns(t.at), attributes=_clean({
                    "stratagem.from_role": t.from_role, "stratagem.to_role": t.to_role,
                    "stratagem.tokens": t.tokens, "stratagem.reason": t.reason,
                    "stratagem.node": t.node or None}))
        wctx = trace.set_span_in_context(workflow)
        roles: dict[str, list[LedgerEntry]] = {}
        for row in run_rows:
            roles.setdefault(row.role, []).append(row)
        for role, role_rows in roles.items():
            agent = tracer.start_span(
                f"invoke_agent {role}", context=wctx,
                start_time=min(_ns(r.started_at) for r in role_rows),
                attributes=_clean({
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": role,
                    "stratagem.budget_remaining": None if account is None
                    else account.remaining(role)}))
            actx = trace.set_span_in_context(agent)
            for row in role_rows:
                span = tracer.start_span(f"chat {row.model}", context=actx,
                                         kind=trace.SpanKind.CLIENT,
                                         start_time=_ns(row.started_at),
                                         attributes=chat_attributes(row))
                if row.status != "ok":
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
                span.end(end_time=_end_ns(row))
            agent.end(end_time=max(_end_ns(r) for r in role_rows))
        workflow.end(end_time=end)


def ledger_spans(ledger: TokenLedger | Account, *, run_id: str | None = None,
                 service_name: str = "stratagem") -> list[ReadableSpan]:
    """The spans of a ledger (or an account's run), built but not exported."""
    account = ledger if isinstance(ledger, Account) else None
    book = ledger.ledger if isinstance(ledger, Account) else ledger
    run = run_id if run_id is not None else (account.run_id if account is not None else None)
    rows = book.entries(run_id=run) if run is not None else book.entries()
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _emit(provider.get_tracer(_SCOPE), rows, account, book)
    provider.shutdown()
    return list(memory.get_finished_spans())


def export_ledger(ledger: TokenLedger | Account, exporter: SpanExporter, *,
                  run_id: str | None = None, service_name: str = "stratagem") -> int:
    """Export a ledger's rows as GenAI spans through ``exporter``; returns the number of
    ``chat`` spans (one per ledger row).

    Raises:
        RuntimeError: If the exporter reports a failure.
    """
    spans = ledger_spans(ledger, run_id=run_id, service_name=service_name)
    result = exporter.export(spans)
    if getattr(result, "name", "SUCCESS") != "SUCCESS":
        raise RuntimeError(f"the span exporter failed ({result})")
    return sum(1 for s in spans if (s.attributes or {}).get("gen_ai.operation.name") == "chat")


def live_spans(account: Account, exporter: SpanExporter, *,
               service_name: str = "stratagem") -> Callable[[], None]:
    """Opt-in: export a ``chat`` span for each row as the run records it. Returns the
    function that stops it."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(_SCOPE)

    def on_event(event: AccountEvent) -> None:
        if isinstance(event, CallRecorded):
            row = event.entry
            span = tracer.start_span(f"chat {row.model}", kind=trace.SpanKind.CLIENT,
                                     start_time=_ns(row.started_at),
                                     attributes=chat_attributes(row))
            span.end(end_time=_end_ns(row))

    unsubscribe = account.subscribe(on_event)

    def stop() -> None:
        unsubscribe()
        provider.shutdown()

    return stop


def otlp_exporter(endpoint: str, *, timeout_s: float = 10.0) -> SpanExporter:
    """An OTLP/HTTP (protobuf) span exporter for a collector at ``endpoint``
    (``http://127.0.0.1:4318``; ``/v1/traces`` is appended when missing)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # (imported when asked for: only the CLI and users need it)
        )
    except ImportError as exc:  # pragma: no cover
        raise missing_extra("otel", "opentelemetry-exporter-otlp-proto-http", exc) from exc
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    return OTLPSpanExporter(endpoint=url, timeout=timeout_s)


