"""The report reads the frame the ablation writes: ``RunRecord`` rows via ``records_frame``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from stratagem.ablation import RunRecord, records_frame
from stratagem.report import build_report, topology_table


def _record(i: int, topology: str, budget: int, **kw: object) -> RunRecord:
    fields: dict[str, object] = {
        "run_id": f"r{i}",
        "cell": f"{topology}|{budget}|uniform",
        "suite": "arith",
        "task_id": f"t{i % 3}",
        "topology": topology,
        "budget": budget,
        "allocated": budget,
        "seed": i % 2,
        "backend": "simulated",
        "model": "sim",
        "simulated": True,
        "correct": i % 3 != 0,
        "tokens_total": budget // 2 + i,
        "tokens_solver": budget // 2,
        "accepted_tokens": budget // 3,
        "waste_tokens": budget // 2 + i - budget // 3,
    }
    fields.update(kw)
    return RunRecord.model_validate(fields)


def test_report_from_run_records(tmp_path: Path) -> None:
    records = [
        _record(i, t, b, cost_usd=None if i == 0 else 0.001)
        for i, (t, b) in enumerate(
            (t, b) for t in ("single", "debate") for b in (1000, 2000) for _ in range(6)
        )
    ]
    df = records_frame(records)
    console = Console(record=True, width=160, color_system=None)
    console.print(topology_table(df))
    text = console.export_text()
    assert "Topologies by budget (SIMULATED)" in text
    assert "≥$" in text
    paths = build_report(
        tmp_path,
        results=df,
        attribution=None,
        comparisons=[],
        returns=[],
        waste=None,
        audit={},
        transfers=[],
        title="records",
    )
    page = paths.html.read_text(encoding="utf-8")
    assert "SIMULATED DATA" in page and "Runs (24)" in page
