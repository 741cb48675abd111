"""The results store: one durable row per run keyed by run id, refusal of foreign or newer
files, CSV/Parquet exports with RunRecord's columns, and no secrets on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stratagem.ablation import ResultsStore, RunRecord, records_frame
from stratagem.budgets import LedgerStore
from stratagem.errors import ConfigError, LedgerFormatError
from stratagem.records import RECORD_COLUMNS

SECRET = "sk-" + "Xy9" * 12


def record(run_id: str = "r1", **changes: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": run_id, "cell": "single|500|uniform", "suite": "arith", "task_id": "arith/0/0",
        "difficulty": 0.4, "topology": "single", "budget": 500, "allocated": 500, "seed": 0,
        "backend": "simulated", "model": "simulated", "simulated": True, "correct": True,
        "answer": "42", "stop_reason": "done", "mode": "single", "roles_present": "solver",
        "tokens_total": 180, "prompt_tokens": 90, "completion_tokens": 90, "tokens_solver": 180,
        "accepted_tokens": 180, "calls": 1, "cost_usd": 0.0,
    }
    return RunRecord(**{**fields, **changes})


def test_records_round_trip_in_the_order_written(tmp_path: Path) -> None:
    rows = [record("b"), record("a", correct=False, cached_tokens=None), record("c", score=0.5)]
    with ResultsStore(tmp_path / "results.sqlite") as rs:
        for r in rows:
            rs.add(r)

        assert rs.records() == rows
        assert rs.done() == {"a", "b", "c"}


def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    written = record("r1")
    with ResultsStore(path) as rs:
        rs.add(written)

    with ResultsStore(path) as rs:
        assert rs.records() == [written]
        assert rs.done() == {"r1"}


def test_a_second_record_for_the_same_run_is_ignored(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.sqlite") as rs:
        rs.add(record("r1", tokens_total=100, tokens_solver=100))
        rs.add(record("r1", tokens_total=999, tokens_solver=999))

        assert [r.tokens_total for r in rs.records()] == [100]


def test_an_empty_store_has_a_frame_with_every_column(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.sqlite") as rs:
        frame = rs.frame()

    assert frame.empty
    assert list(frame.columns) == list(RECORD_COLUMNS)
    assert list(records_frame([]).columns) == list(RECORD_COLUMNS)


def test_csv_and_parquet_exports_hold_every_row(tmp_path: Path) -> None:
    rows = [record(f"r{i}", seed=i, correct=i % 2 == 0) for i in range(4)]
    with ResultsStore(tmp_path / "results.sqlite") as rs:
        for r in rows:
            rs.add(r)
        csv_path = rs.export_csv(tmp_path / "results.csv")
        parquet_path = rs.export_parquet(tmp_path / "results.parquet")

    for frame in (pd.read_csv(csv_path), pd.read_parquet(parquet_path)):
        assert list(frame.columns) == list(RECORD_COLUMNS)
        assert frame["run_id"].tolist() == ["r0", "r1", "r2", "r3"]
        assert frame["correct"].tolist() == [True, False, True, False]
        assert frame["tokens_total"].tolist() == [180] * 4


def test_parquet_without_pyarrow_is_a_config_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pyarrow(*args: Any, **kwargs: Any) -> None:
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_pyarrow)
    with ResultsStore(tmp_path / "results.sqlite") as rs:
        rs.add(record())
        with pytest.raises(ConfigError, match="pip install pyarrow"):
            rs.export_parquet(tmp_path / "results.parquet")


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as rs:
        rs.add(record(answer=f"my key is {SECRET}", error=f"Authorization: Bearer {SECRET}"))
        stored = rs.records()[0]
        rs.export_csv(tmp_path / "results.csv")

    assert SECRET not in stored.answer
    assert stored.error is not None and SECRET not in stored.error
    assert SECRET.encode() not in path.read_bytes()
    assert SECRET not in (tmp_path / "results.csv").read_text(encoding="utf-8")


def test_an_sqlite_file_of_another_kind_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
        conn.execute("INSERT INTO mine VALUES (1)")
    conn.close()
    before = path.read_bytes()

    with pytest.raises(LedgerFormatError, match="not stratagem results"):
        ResultsStore(path)

    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.write_text("these are not results\n" * 100, encoding="utf-8")

    with pytest.raises(LedgerFormatError, match="not a stratagem results file"):
        ResultsStore(path)


def test_a_stratagem_ledger_is_not_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    LedgerStore(path).close()

    with pytest.raises(LedgerFormatError):
        ResultsStore(path)


def test_a_results_file_from_a_newer_stratagem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    ResultsStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE results_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()

    with pytest.raises(LedgerFormatError, match="newer stratagem"):
        ResultsStore(path)



def test_a_results_file_of_the_previous_version_is_read_and_labelled_current(
        tmp_path: Path) -> None:
    """Version 1 records have no failed_calls: they read as 0, and the file is relabelled,
    since it now holds (or will hold) records an older stratagem cannot read."""
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as rs:
        rs.add(record("old"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE results_meta SET value = '1' WHERE key = 'schema_version'")
        (data,) = conn.execute("SELECT record FROM runs").fetchone()
        old = json.loads(data)
        del old["failed_calls"]
        conn.execute("UPDATE runs SET record = ?", (json.dumps(old),))
    conn.close()

    with ResultsStore(path) as rs:
        (rec,) = rs.records()
    assert rec.run_id == "old" and rec.failed_calls == 0
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute(
            "SELECT value FROM results_meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == "2"


def test_a_user_role_gets_its_own_column_and_old_records_still_open(tmp_path: Path) -> None:
    mine = record("r-critic", seed=1).model_copy(update={
        "role_tokens": {"solver": 100, "critic": 30}})
    old = record("r-old", seed=2).model_dump(mode="json")
    old.pop("role_tokens")  # a record written before per-role tokens for any role
    old["tokens_solver"] = 180
    with ResultsStore(tmp_path / "results.sqlite") as rs:
        rs.add(mine)
        rs.add(RunRecord.model_validate(old))
        frame = rs.frame()
        path = rs.export_csv(tmp_path / "results.csv")
    columns = list(frame.columns)
    assert columns.index("tokens_critic") == columns.index("tokens_judge") + 1
    assert frame["tokens_critic"].tolist() == [30, 0]
    assert RunRecord.model_validate(old).role_tokens == {"solver": 180}
    assert "tokens_critic" in pd.read_csv(path).columns
