from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from stratagem.attribution import Attribution, Interval, RoleReturn, TopologyComparison
from stratagem.budgets import Transfer, UsageTotals
from stratagem.report import (
    attribution_table,
    audit_table,
    comparisons_table,
    returns_table,
    topology_table,
    transfers_table,
    waste_table,
)


def render(table: Table, width: int = 200) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(table)
    return console.export_text()


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.lstrip("│ ").startswith(start))


def test_audit_table_never_shows_unknown_as_zero(audit: dict[str, UsageTotals]) -> None:
    text = render(audit_table(audit, by="role"))
    for header in (
        "role",
        "calls",
        "prompt",
        "completion",
        "cached",
        "reasoning",
        "total",
        "cost",
        "estimated",
        "errors",
    ):
        assert header in text
    judge = _line(text, "judge")
    assert judge.count("unknown") == 2  # cached and reasoning: no row reported them
    assert "$0.0020" in judge
    planner = _line(text, "planner")
    assert "100" in planner and "unknown" in planner  # reasoning unknown; cost unknown
    assert "$" not in planner  # no known price: the cost is unknown, not $0
    solver = _line(text, "solver")
    assert "1,200 (3/10 unknown)" in solver
    assert "≥$0.1200" in solver  # one call without a price: a lower bound
    totals = _line(text, "total")
    assert "16" in totals and "8,310" in totals
    assert "1,300 (7/16 unknown)" in totals
    assert "≥$0.1220" in totals


def test_audit_table_empty_and_tuple_keys() -> None:
    text = render(audit_table({}, by="role"))
    assert "No ledger rows" in text
    text = render(
        audit_table(
            {("solver", "gpt-4o"): UsageTotals(calls=1, prompt_tokens=5, cost_usd=0.0)},
            by="role, model",
        )
    )
    assert "solver / gpt-4o" in text
    assert "$0.0000" in text


def test_audit_table_simulated_title() -> None:
    assert "(SIMULATED)" in render(audit_table({}, by="role", simulated=True))
    assert "SIMULATED" not in render(audit_table({}, by="role"))


def test_topology_table_wilson_intervals(frame: pd.DataFrame) -> None:
    text = render(topology_table(frame))
    for header in (
        "topology",
        "budget",
        "runs",
        "accuracy [95% CI]",
        "mean tokens",
        "mean cost",
        "mean waste",
    ):
        assert header in text
    assert "Wilson" in text
    assert "SIMULATED" not in text
    # single @ 1000: correct when (seed + task) % 5 < 2: 4 of 12, Wilson [13.8%, 60.9%].
    assert "33.3% [13.8%, 60.9%]" in _line(text, "single")
    assert "≥" not in text  # every cost known


def test_topology_table_uses_comparison_intervals(
    frame: pd.DataFrame, comparisons: list[TopologyComparison]
) -> None:
    text = render(topology_table(frame, comparisons))
    assert "50.0% [30.0%, 70.0%]" in text
    assert "bootstrap" in text


def test_topology_table_simulated_and_cost_lower_bound(make_frame: object) -> None:
    df = make_frame(simulated=True, unknown_cost_every=5)  # type: ignore[operator]
    text = render(topology_table(df))
    assert "(SIMULATED)" in text
    assert "≥$" in text


def test_topology_table_unscored_runs(frame: pd.DataFrame) -> None:
    df = frame.copy()
    df["correct"] = None
    text = render(topology_table(df))
    assert "n/a" in text and "12 (0 scored)" in text


def test_topology_table_empty(frame: pd.DataFrame) -> None:
    assert "No runs" in render(topology_table(frame.iloc[0:0]))


def test_attribution_table(attribution: Attribution, sim_attribution: Attribution) -> None:
    text = render(attribution_table(attribution))
    for header in ("group", "share [95% CI]", "R² part [95% CI]"):
        assert header in text  # brackets shown literally, not read as rich markup
    assert "55.0% [41.0%, 68.0%]" in _line(text, "tokens")
    assert "0.231 [0.170, 0.290]" in text
    flat = " ".join(text.split())
    assert "72 runs" in flat and "200 bootstrap" in flat
    assert "SIMULATED" not in text
    assert "(SIMULATED)" in render(attribution_table(sim_attribution))


def test_attribution_table_lists_skipped_groups() -> None:
    attr = Attribution(
        r2=Interval(0.1, 0.0, 0.2),
        shares={"tokens": Interval(1.0, 1.0, 1.0)},
        r2_parts={"tokens": Interval(0.1, 0.0, 0.2)},
        n=10,
        n_boot=50,
        groups={"tokens": ("log_tokens",)},
        skipped={"mode": "same as topology"},
    )
    assert "mode (same as topology)" in render(attribution_table(attr))


def test_transfers_table(transfers: list[Transfer]) -> None:
    text = render(transfers_table(transfers))
    for header in ("run", "from", "to", "tokens", "reason"):
        assert header in text
    assert "judge confidence 0.31 < 0.5" in text
    assert "420" in _line(text, "2 transfers")
    assert "No budget transfers" in render(transfers_table([]))
    assert "first 1 of 2" in render(transfers_table(transfers, limit=1))


def test_comparisons_returns_waste(
    comparisons: list[TopologyComparison], returns: list[RoleReturn], waste: pd.DataFrame
) -> None:
    text = render(comparisons_table(comparisons, simulated=True))
    assert "(SIMULATED)" in text
    assert _line(text, "1,000").split("│")[2].strip() == "hierarchical"  # rank 1 first
    text = render(returns_table(returns))
    assert "+0.012 [+0.004, +0.020]" in text and "-0.003" in text
    text = render(waste_table(waste))
    assert "16.7%" in text and "2,600" in text


def test_text_is_redacted_and_not_markup(secret: str) -> None:
    t = Transfer(
        from_role="judge", to_role="solver", tokens=5, reason="ok", run_id=f"[bold]{secret}[/bold]"
    )
    text = render(transfers_table([t]))
    assert secret not in text
    assert "[bold]" in text  # printed literally, never as rich markup
