"""The viewer's reading of an output folder: read-only, paged and filtered in SQL, a trace
whose token sums are the ledger's, live updates, and clear refusals of bad folders."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import ResultsStore, RunRecord
from stratagem.budgets import LedgerStore, TokenLedger
from stratagem.errors import ConfigError
from stratagem.view import OutputFolder, build_trace

from .conftest import RUNS


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def test_pages_filter_and_sort_in_the_index(view_folder: Path) -> None:
    folder = OutputFolder(view_folder)
    try:
        assert folder.index.sync() == RUNS and folder.index.sync() == 0
        page = folder.index.page({}, limit=10)
        assert page.total == RUNS and len(page.rows) == 10
        seen = {r["run_id"] for o in range(0, RUNS, 10)
                for r in folder.index.page({}, offset=o, limit=10).rows}
        assert len(seen) == RUNS
        page = folder.index.page({"topology": "best_of_8+verifier", "budget": "1600"},
                                 sort="tokens_total", desc=True, limit=100)
        assert page.total == 2 * 3  # two policies x three tasks
        tokens = [r["tokens_total"] for r in page.rows]
        assert tokens == sorted(tokens, reverse=True)
        right = folder.index.page({"correct": "1"}, limit=100).total
        wrong = folder.index.page({"correct": "0"}, limit=100).total
        assert right + wrong == RUNS
        assert set(folder.index.facets()["topology"]) == {
            "single", "plan_solve", "best_of_4+verifier", "best_of_8+verifier"}
        with pytest.raises(ConfigError, match="unknown filter or sort column 'seed'"):
            folder.index.page({"seed": "0"})
        with pytest.raises(ConfigError, match="limit"):
            folder.index.page({}, limit=0)
    finally:
        folder.close()


def test_a_trace_sums_to_the_ledger_and_carries_the_checkpointed_text(
        view_folder: Path) -> None:
    with LedgerStore(view_folder / "ledger.sqlite") as store:
        ledger = TokenLedger(store)
    folder = OutputFolder(view_folder)
    try:
        records = [json.loads(r) for r in folder.records_json()]
        replies = 0
        assert any(r["transfers"] for r in records), "the fixture should move budget"
        for record in records:
            run_id = record["run_id"]
            trace = build_trace(record, folder.calls(run_id), folder.transfers(run_id),
                                folder.checkpoint_writes(run_id))
            totals = ledger.totals(run_id=run_id)
            attempts = [a for n in trace["nodes"] for a in n["attempts"]]
            assert len(attempts) == totals.calls
            assert trace["totals"]["total_tokens"] == totals.total_tokens
            assert trace["totals"]["prompt_tokens"] == totals.prompt_tokens
            assert len(trace["budget"]["transfers"]) == record["transfers"]
            assert trace["budget"]["points"][-1]["spent"] == totals.total_tokens
            assert trace["durable"]
            nodes = [n["node"] for n in trace["nodes"]]
            assert nodes[0] == "__start__" and "finalize" in nodes
            solved = [a for a in attempts if a["role"] == "solver" and a["status"] == "ok"]
            assert all("Answer:" in a["reply"] for a in solved)
            assert all("Work through the steps" in json.dumps(a["prompt"]) for a in solved)
            replies += len(solved)
        assert replies > RUNS
    finally:
        folder.close()


def test_the_viewer_leaves_the_folder_as_it_was(view_folder: Path,
                                                viewer: Callable[[Path], Any]) -> None:
    before = _snapshot(view_folder)
    with viewer(view_folder) as url:
        summary = _get(url + "api/summary")
        assert summary["runs"] == RUNS
        run_id = _get(url + "api/runs?limit=1")["rows"][0]["run_id"]
        assert _get(f"{url}api/run/{run_id}")["run"]["run_id"] == run_id
        with urllib.request.urlopen(url + "report/", timeout=120) as r:
            assert b"Mean billed tokens per run by role" in r.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "api/run/nope", timeout=30)
        assert err.value.code == 404
        err.value.close()
    assert _snapshot(view_folder) == before


def test_live_mode_sees_runs_written_while_it_serves(view_folder: Path, tmp_path: Path,
                                                      viewer: Callable[[Path], Any]) -> None:
    live = tmp_path / "live"
    shutil.copytree(view_folder, live)
    with viewer(live) as url:
        assert _get(url + "api/status") == {"runs": RUNS, "new": 0}
        with ResultsStore(live / "results.sqlite") as store:
            record = store.records()[0]
            store.add(RunRecord.model_validate({**record.model_dump(), "run_id": "new-run",
                                                "topology": "a_new_topology"}))
        assert _get(url + "api/status") == {"runs": RUNS + 1, "new": 1}
        page = _get(url + "api/runs?topology=a_new_topology")
        assert [r["run_id"] for r in page["rows"]] == ["new-run"]


def test_bad_folders_are_refused_clearly(tmp_path: Path, view_folder: Path) -> None:
    with pytest.raises(ConfigError, match="not an ablation output folder"):
        OutputFolder(tmp_path)
    with pytest.raises(ConfigError, match="is not a folder"):
        OutputFolder(tmp_path / "missing")
    newer = tmp_path / "newer"
    shutil.copytree(view_folder, newer)
    with sqlite3.connect(newer / "ledger.sqlite") as conn:
        conn.execute("UPDATE stratagem_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="ledger schema version 99, but this stratagem reads"):
        OutputFolder(newer)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "results.sqlite").write_text("not sqlite")
    (junk / "ledger.sqlite").write_text("not sqlite")
    with pytest.raises(ConfigError, match=r"cannot be read as SQLite|not a results file"):
        OutputFolder(junk)
