"""``stratagem audit``: ledger summaries by role, node, model, run or label."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer

from stratagem.ablation import ResultsStore
from stratagem.attribution import waste_by_topology
from stratagem.budgets import TokenLedger, entry_key
from stratagem.cli._common import console, parse_params
from stratagem.errors import ConfigError
from stratagem.report import audit_table, transfers_table, waste_table


def _ledger_path(path: Path) -> Path:
    if path.is_dir():
        candidate = path / "ledger.sqlite"
        if not candidate.is_file():
            raise ConfigError(f"{path} has no ledger.sqlite: pass a ledger file or the output "
                              "folder of `stratagem ablate`")
        return candidate
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: pass a ledger file or an output folder")
    return path


def audit_command(
    path: Annotated[Path, typer.Argument(help="A ledger file, or an ablation output folder.")],
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="Group by: role, node, model, run, backend, status, "
                     "label:NAME (repeat for pairs)."),
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="Filter FIELD=VALUE (repeatable).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or otlp.")] = "table",
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="OTLP/HTTP collector for --format otlp, "
                                 "e.g. http://127.0.0.1:4318.")
    ] = None,
) -> None:
    """Summarise spend: calls, prompt/completion/cached/reasoning tokens, cost, errors,
    plus waste per topology and the budget transfers; or send it as OpenTelemetry spans."""
    if fmt not in ("table", "csv", "json", "otlp"):
        raise ConfigError(f"--format must be table, csv, json or otlp, got {fmt!r}")
    if fmt == "otlp":
        _export_otlp(path, endpoint)
        return
    keys = by or ["role"]
    filters = {k: str(v) for k, v in parse_params(where, what="--where").items()}
    for key in [*keys, *filters]:
        entry_key(key)  # a clear error for an unknown field, before reading anything
    # Read-only: an audit changes nothing in the folder (and works where it may only read).
    ledger = TokenLedger.open(_ledger_path(path), readonly=True)
    groups = ledger.group_by(*keys, **filters)
    selected = ledger.entries(**filters)
    run_ids = {e.run_id for e in selected}
    simulated = any(e.backend == "simulated" for e in selected)
    transfers = [t for t in ledger.transfers() if not filters or t.run_id in run_ids]
    if fmt == "json":
        payload = {
            "by": keys,
            "groups": [{"key": list(k) if isinstance(k, tuple) else k, **g.as_dict()}
                       for k, g in groups.items()],
            "transfers": [t.model_dump(mode="json") for t in transfers],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    if fmt == "csv":
        buf = io.StringIO()
        rows = [{"key": "|".join(map(str, k)) if isinstance(k, tuple) else k, **g.as_dict()}
                for k, g in groups.items()]
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["key"])
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(buf.getvalue().rstrip("\n"))
        return
    console.print(audit_table(groups, by=", ".join(keys), simulated=simulated))
    results = (path / "results.sqlite") if path.is_dir() else None
    if results is not None and results.is_file():
        with ResultsStore(results, readonly=True) as rs:
            df = rs.frame()
        if len(df):
            console.print(waste_table(waste_by_topology(df), simulated=simulated))
    if transfers:
        console.print(transfers_table(transfers, simulated=simulated))
    else:
        console.print("no budget transfers recorded", style="dim")


def _export_otlp(path: Path, endpoint: str | None) -> None:
    if not endpoint:
        raise ConfigError("--format otlp needs --endpoint URL (an OTLP/HTTP collector, e.g. "
                          "http://127.0.0.1:4318)")
    try:
        # (the otel extra is optional: imported only for --format otlp)
        from stratagem.integrations.otel import (  # noqa: PLC0415
            export_ledger,
            otlp_exporter,
        )
    except ImportError as exc:
        raise ConfigError(str(exc)) from exc
    ledger = TokenLedger.open(_ledger_path(path), readonly=True)  # exporting changes nothing
    exporter = otlp_exporter(endpoint)
    try:
        sent = export_ledger(ledger, exporter)
    except RuntimeError as exc:
        raise ConfigError(f"{exc}: is a collector listening at {endpoint}?") from exc
    finally:
        exporter.shutdown()
    typer.echo(f"exported {sent} chat span(s) to {endpoint}")
