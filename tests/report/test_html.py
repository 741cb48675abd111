from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import stratagem
from stratagem.attribution import Attribution, RoleReturn, TopologyComparison
from stratagem.budgets import Transfer, UsageTotals
from stratagem.report import ReportPaths, build_report, write_html_report

PNG = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _build(
    out: Path,
    results: pd.DataFrame,
    attribution: Attribution | None,
    *,
    comparisons: list[TopologyComparison] | None = None,
    returns: list[RoleReturn] | None = None,
    waste: pd.DataFrame | None = None,
    audit: dict[str, UsageTotals] | None = None,
    transfers: list[Transfer] | None = None,
    config_text: str | None = None,
) -> tuple[ReportPaths, str]:
    paths = build_report(
        out,
        results=results,
        attribution=attribution,
        comparisons=comparisons or [],
        returns=returns or [],
        waste=waste,
        audit=audit or {},
        transfers=transfers or [],
        title="Ablation <one>",
        config_text=config_text,
    )
    return paths, paths.html.read_text(encoding="utf-8")


@pytest.fixture
def extras(
    comparisons: list[TopologyComparison],
    returns: list[RoleReturn],
    waste: pd.DataFrame,
    audit: dict[str, UsageTotals],
    transfers: list[Transfer],
) -> dict[str, Any]:
    """Everything a full report shows besides the results and the attribution."""
    return {
        "comparisons": comparisons,
        "returns": returns,
        "waste": waste,
        "audit": audit,
        "transfers": transfers,
    }


def test_full_report_is_self_contained(
    tmp_path: Path, frame: pd.DataFrame, attribution: Attribution, extras: dict[str, Any]
) -> None:
    paths, page = _build(
        tmp_path / "report",
        frame,
        attribution,
        config_text="[grid]\nbudgets = [1000, 4000]",
        **extras,
    )
    assert paths.html == tmp_path / "report" / "report.html"
    assert set(paths.plots) == {"accuracy_vs_tokens", "attribution", "spend_per_role"}
    for png in paths.plots.values():
        assert png.parent == tmp_path / "report" and png.read_bytes()[:8] == PNG
    images = DATA_URI.findall(page)
    assert len(images) == 3
    assert all(base64.b64decode(data)[:8] == PNG for data in images)
    # Nothing to fetch: no external src/href, no scripts, no stylesheet links.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "http" not in DATA_URI.sub("", page).lower()
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "<title>Ablation &lt;one&gt;</title>" in page  # escaped
    assert "SIMULATED" not in page
    assert f"stratagem {stratagem.__version__}" in page
    assert re.search(r"Generated \d{4}-\d\d-\d\dT", page)
    assert "<pre>[grid]\nbudgets = [1000, 4000]</pre>" in page
    for title in (
        "Topologies by budget",
        "Topologies at matched compute",
        "Attribution of success",
        "Marginal return",
        "Waste by topology",
        "Token audit by role",
        "Budget transfers",
        "Runs (72)",
    ):
        assert title in page
    assert "1,200 (3/10 unknown)" in page and "≥$0.1200" in page


def test_simulated_report_has_banner(
    tmp_path: Path, sim_frame: pd.DataFrame, sim_attribution: Attribution
) -> None:
    _, page = _build(tmp_path, sim_frame, sim_attribution)
    assert '<div class="banner" role="alert">SIMULATED DATA' in page
    assert "Topologies by budget (SIMULATED)" in page
    assert "Token audit by role (SIMULATED)" in page


def test_partly_simulated_report_says_how_many(
    tmp_path: Path, frame: pd.DataFrame, sim_frame: pd.DataFrame
) -> None:
    mixed = pd.concat([frame, sim_frame.head(5)], ignore_index=True)
    _, page = _build(tmp_path, mixed, None)
    assert "PARTLY SIMULATED DATA: 5 of 77 runs" in page


def test_secrets_never_reach_the_report(
    tmp_path: Path, frame: pd.DataFrame, attribution: Attribution, secret: str
) -> None:
    df = frame.copy()
    df.loc[0, "answer"] = f"the key is {secret}"
    df.loc[1, "error"] = f"401 for Bearer {secret}"
    paths, page = _build(
        tmp_path, df, attribution, config_text=f'[endpoint]\napi_key = "{secret}"\nurl = "local"'
    )
    assert secret not in page
    assert "[REDACTED]" in page
    assert secret not in "".join(p.read_bytes().decode("latin-1") for p in paths.plots.values())


def test_html_escapes_user_text(tmp_path: Path, frame: pd.DataFrame) -> None:
    df = frame.copy()
    df.loc[0, "answer"] = "<img src=x onerror=alert(1)>"
    _, page = _build(tmp_path, df, None)
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize("case", ["one_topology_one_budget", "empty", "unscored"])
def test_degenerate_inputs_give_a_report_with_notes(
    case: str, tmp_path: Path, make_frame: Callable[..., pd.DataFrame]
) -> None:
    if case == "one_topology_one_budget":
        df = make_frame(topologies=("single",), budgets=(2000,), seeds=2, tasks=2)
    elif case == "empty":
        df = make_frame().iloc[0:0]
    else:
        df = make_frame().assign(correct=None)
    paths, page = _build(tmp_path, df, None)
    assert "attribution" not in paths.plots
    assert len(DATA_URI.findall(page)) == 2
    assert "No attribution" in page
    expected = {
        "one_topology_one_budget": ["Only one topology (single)", "Only one budget (2,000"],
        "empty": ["No runs: the results are empty"],
        "unscored": ["72 of 72 runs have no verdict"],
    }[case]
    for note in expected:
        assert note in page


def test_caller_notes_and_plot_order(tmp_path: Path, frame: pd.DataFrame) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(PNG + b"\0" * 16)
    svg = tmp_path / "y.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    page = write_html_report(
        tmp_path / "r.html",
        title="t",
        results=frame,
        attribution=None,
        comparisons=[],
        returns=[],
        waste=None,
        audit={},
        transfers=[],
        plots={"custom": png, "vector": svg},
        notes=["no attribution: only 3 runs"],
    ).read_text(encoding="utf-8")
    assert "no attribution: only 3 runs" in page
    assert "No attribution: it was not computed" not in page  # the caller already said why
    assert len(DATA_URI.findall(page)) == 1
    assert "not embedded" in page and "http" not in DATA_URI.sub("", page)
