"""OTLP export: a real OTLP/HTTP receiver on 127.0.0.1 gets one chat span per ledger row."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from stratagem.budgets import Account, Budget, LedgerStore, TokenLedger, Usage
from stratagem.cli import main
from stratagem.integrations.otel import export_ledger, live_spans, otlp_exporter


class _Receiver:
    """An OTLP/HTTP trace receiver: decodes each ExportTraceServiceRequest it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        owner.spans.extend(ss.spans)
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def chat(self) -> list[Any]:
        return [s for s in self.spans if _attr(s, "gen_ai.operation.name") == "chat"]


def _value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def _attr(span: Any, key: str) -> Any:
    for kv in span.attributes:
        if kv.key == key:
            return _value(kv.value)
    return None


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    r.thread.start()
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def _account(path: Path | None = None) -> Account:
    ledger = TokenLedger(LedgerStore(path)) if path else TokenLedger()
    acct = Account(ledger, Budget(total=5_000, roles={"planner": 1000, "solver": 3000}),
                   run_id="run-1")
    acct.record(Usage(100, 20, 60, None), model="gpt-4o-mini", role="planner", node="plan")
    for i in range(3):
        acct.record(Usage(50, 30, None, 10), model="gpt-4o-mini", role="solver", node="solve",
                    branch=str(i), attempt=1)
    acct.record(Usage.zero(), model="gpt-4o-mini", role="solver", node="solve", status="error",
                error="RateLimitError: 429 for key sk-abcdefghijklmnop", attempt=2)
    acct.transfer("planner", "solver", 200, "planner under budget")
    return acct


def test_one_chat_span_per_row_and_token_sums(receiver: _Receiver) -> None:
    acct = _account()
    exporter = otlp_exporter(receiver.url)
    assert export_ledger(acct.ledger, exporter) == 5
    exporter.shutdown()
    chat = receiver.chat()
    rows = acct.entries()
    assert len(chat) == len(rows)
    assert sum(_attr(s, "gen_ai.usage.input_tokens") for s in chat) == sum(
        r.prompt_tokens for r in rows)
    assert sum(_attr(s, "gen_ai.usage.output_tokens") for s in chat) == sum(
        r.completion_tokens for r in rows)
    assert {_attr(s, "stratagem.call_id") for s in chat} == {r.call_id for r in rows}
    [failed] = [s for s in chat if _attr(s, "error.type")]
    assert _attr(failed, "error.type") == "RateLimitError"
    assert all("sk-abcdefghijklmnop" not in str(s) for s in receiver.spans)
    [planner] = [s for s in chat if _attr(s, "stratagem.role") == "planner"]
    assert _attr(planner, "gen_ai.usage.cache_read.input_tokens") == 60
    names = {s.name for s in receiver.spans}
    assert {"invoke_workflow stratagem", "invoke_agent planner", "invoke_agent solver"} <= names
    [workflow] = [s for s in receiver.spans if s.name == "invoke_workflow stratagem"]
    assert [e.name for e in workflow.events] == ["stratagem.transfer"]
    row = rows[0]
    [span] = [s for s in chat if _attr(s, "stratagem.call_id") == row.call_id]
    assert span.start_time_unix_nano == int(row.started_at.timestamp() * 1e9)


def test_live_spans_during_a_run(receiver: _Receiver) -> None:
    acct = Account(run_id="live")
    exporter = otlp_exporter(receiver.url)
    stop = live_spans(acct, exporter)
    acct.record(Usage(10, 5), model="m", role="solver")
    acct.record(Usage(11, 6), model="m", role="solver")
    stop()
    assert len(receiver.chat()) == 2


def test_audit_cli_otlp(receiver: _Receiver, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    n = len(_account(tmp_path / "ledger.sqlite").entries())
    main(["audit", str(tmp_path), "--format", "otlp", "--endpoint", receiver.url])
    assert f"exported {n} chat span(s)" in capsys.readouterr().out
    assert len(receiver.chat()) == n


def test_audit_cli_otlp_needs_an_endpoint(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _account(tmp_path / "ledger.sqlite")
    with pytest.raises(SystemExit) as exited:
        main(["audit", str(tmp_path), "--format", "otlp"])
    assert exited.value.code == 2
    assert "--endpoint" in capsys.readouterr().err
