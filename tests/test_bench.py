"""The benchmark programs that can run in seconds do run, to their summary line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stratagem.ablation import ResultsStore

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _efficiency(out: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / "efficiency.py"), "--backend", "simulated", "--tasks", "4",
         "--seeds", "0", "1", "--fractions", "0.5", "1", "--keep", str(out), *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _prompt_tokens(out: Path) -> int:
    with ResultsStore(out / "best_of_8" / "results.sqlite") as rs:
        return int(rs.frame()["prompt_tokens"].sum())


def test_the_efficiency_benchmark_runs_on_the_simulated_backend(tmp_path: Path) -> None:
    stdout = _efficiency(tmp_path / "shots")
    assert "2 worked examples" in stdout
    (summary,) = [line for line in stdout.splitlines() if line.startswith("SUMMARY")]
    assert summary.startswith("SUMMARY efficiency (SIMULATED backend): adaptive allocation")
    assert stdout.count("8 runs in") == 2 and "[adaptive: 16 runs in" in stdout
    assert {p.name for p in (tmp_path / "shots").iterdir()} == {"best_of_8", "sequential",
                                                                "adaptive"}
    # The worked examples reach the solver: the same runs without them send fewer tokens.
    _efficiency(tmp_path / "plain", "--few-shot", "0")
    assert _prompt_tokens(tmp_path / "shots") > _prompt_tokens(tmp_path / "plain")


def test_the_viewer_benchmark_runs_to_its_summary() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "viewer.py"), "--runs", "300"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("SUMMARY viewer: first page of 300 runs in ")


def test_the_instrument_benchmark_runs_to_its_summary() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "instrument.py"), "--runs", "2",
                           "--cpu-runs", "2", "--latency", "0.001"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("SUMMARY instrument: handler ")
