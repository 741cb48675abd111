"""``stratagem report`` on an ablation with a ``[claim]``: a Findings table, in the terminal
and in the HTML report; a claim that cannot be decided is a note, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stratagem.ablation import load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "claims"


def _twin(tmp_path: Path, name: str, cli: Callable[..., Any], *extra: str) -> Path:
    out = tmp_path / name
    code = cli("ablate", str(EXAMPLES / f"{name}.simulated.toml"), "--output", str(out),
               "--no-report", *extra).code
    assert code == 0
    return out


def test_the_report_prints_and_writes_the_findings(tmp_path: Path,
                                                   cli: Callable[..., Any]) -> None:
    out = _twin(tmp_path, "b_decompose", cli)
    res = cli("report", str(out), "--boot", "50")
    assert res.code == 0, res.err
    assert "Findings (SIMULATED)" in res.out
    row = next(line for line in res.out.splitlines() if line.strip("│ ").startswith("b "))
    assert "supported" in row and "+0." in row
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Findings</h2>" in html
    assert "A separate decomposer and solver beat one solver" in html


def test_a_claim_selecting_no_run_is_a_note(tmp_path: Path, cli: Callable[..., Any]) -> None:
    out = _twin(tmp_path, "b_decompose", cli)
    config = out / "config.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        'treatment = { topology = "decompose_solve" }', 'treatment = { topology = "decompose" }'),
        encoding="utf-8")
    res = cli("report", str(out), "--boot", "0")
    assert res.code == 0 and "Traceback" not in res.err
    assert "no finding: claim b: treatment (topology = 'decompose') selects no run" in res.out
    assert "Findings" not in res.out


def test_the_backend_flags_rerun_a_claim_elsewhere_without_editing_it() -> None:
    config = load_config(EXAMPLES / "b_decompose.toml")
    other = config.with_endpoint(backend="openai", base_url="http://127.0.0.1:9/v1",
                                 model="my-model")
    assert (other.endpoint.backend, other.endpoint.model) == ("openai", "my-model")
    assert other.claim == config.claim and other.grid == config.grid
    assert parse_config(other.model_dump(mode="json")).claim == config.claim
