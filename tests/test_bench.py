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
         "--seeds", "0", "1", "--fractions", "0.5", "1", "--calibration", "4",
         "--keep", str(out), *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _prompt_tokens(out: Path) -> int:
    with ResultsStore(out / "best_of_8" / "results.sqlite") as rs:
        return int(rs.frame()["prompt_tokens"].sum())


def test_the_efficiency_benchmark_runs_on_the_simulated_backend(tmp_path: Path) -> None:
    stdout = _efficiency(tmp_path / "shots")
    assert "2 worked examples" in stdout and "load average" in stdout
    (summary,) = [line for line in stdout.splitlines() if line.startswith("SUMMARY")]
    assert summary.startswith("SUMMARY efficiency (SIMULATED backend) words: tokens to match")
    for policy in ("sequential", "difficulty_adaptive", "adaptive_consistency",
                   "compute_optimal"):
        assert f"; {policy} " in summary or f": {policy} " in summary
    # 4 tasks x 2 seeds per cell: one baseline cell, two budgets, two thresholds.
    assert "[best_of_8: 8 runs in" in stdout and "[sequential: 16 runs in" in stdout
    assert "[adaptive_consistency: 16 runs in" in stdout
    assert "calibration 64 calls" in stdout     # 4 tasks apart x 2 seeds x 8 samples
    assert {p.name for p in (tmp_path / "shots").iterdir()} == {
        "best_of_8", "sequential", "difficulty_adaptive", "adaptive_consistency",
        "compute_optimal"}
    assert list((tmp_path / "shots" / "compute_optimal").glob("calibration-*.json"))
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


def test_the_connectivity_comparison_runs_without_a_verifier(tmp_path: Path) -> None:
    stdout = _efficiency(tmp_path / "conn", "--suite", "connectivity")
    (summary,) = [line for line in stdout.splitlines() if line.startswith("SUMMARY")]
    assert "connectivity" in summary and "sequential" not in summary
    assert "adaptive_consistency" in summary and "compute_optimal" in summary


def test_the_throughput_benchmark_runs_to_its_summary() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "throughput.py"), "--calls", "200",
                           "--inflight", "32", "--rounds", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("machine load (1 min):")
    assert lines[-1].startswith("SUMMARY throughput: stratagem sustained ")
    assert "bare openai SDK" in lines[-1] and "client path above aiohttp" in lines[-1]
