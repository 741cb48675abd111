from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stratagem.budgets import SCHEMA_VERSION, LedgerEntry, LedgerStore, TokenLedger, Transfer
from stratagem.errors import LedgerError, LedgerFormatError


def _row(i: int = 0, **kw: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "role": "solver",
        "model": "gpt-4o",
        "prompt_tokens": 10 + i,
        "completion_tokens": 5,
    }
    fields.update(kw)
    return LedgerEntry(**fields)  # type: ignore[arg-type]


def test_file_is_in_wal_mode_and_rows_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    row = _row(cached_tokens=3, reasoning_tokens=None, cost_usd=0.5, labels={"seed": "1"},
               branch="2", task_id="t", request_id="req-1")
    with LedgerStore(path) as store:
        assert store.append(row) is True
        assert store.append(row) is False
        assert len(store) == 1 and row.call_id in store
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with LedgerStore(path) as store:
        (back,) = store.entries()
    assert back == row


def test_memory_store_filters_in_sql_and_python() -> None:
    store = LedgerStore(":memory:")
    store.append(_row(run_id="a", labels={"topology": "single"}))
    store.append(_row(run_id="b", role="judge", labels={"topology": "refine"}))
    assert [e.run_id for e in store.entries(run="b")] == ["b"]
    assert [e.role for e in store.entries(**{"label:topology": "single"})] == ["solver"]
    assert store.group_by("role")["judge"].calls == 1
    assert store.totals().calls == 2
    store.close()


def test_append_many_is_all_or_nothing(tmp_path: Path) -> None:
    with LedgerStore(tmp_path / "l.sqlite") as store:
        rows = [_row(i) for i in range(100)]
        assert store.append_many(rows) == 100
        assert store.append_many([*rows[:10], _row(200)]) == 1
        assert len(store) == 101
        assert [e.call_id for e in store.iter_entries(batch=7)] == [
            e.call_id for e in store.entries()
        ]


def test_not_a_ledger_is_refused_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all" * 100)
    with pytest.raises(LedgerFormatError, match="not a stratagem ledger"):
        LedgerStore(text)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerFormatError, match="not a stratagem ledger"):
        LedgerStore(other)
    with pytest.raises(LedgerFormatError, match="directory"):
        LedgerStore(tmp_path)


def test_newer_schema_is_refused_and_data_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with LedgerStore(path) as store:
        store.append(_row())
    conn = sqlite3.connect(path)
    conn.execute("UPDATE stratagem_meta SET value = ? WHERE key = 'schema_version'",
                 (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerFormatError, match="upgrade stratagem"):
        LedgerStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM ledger_calls").fetchone()[0] == 1
    conn.close()


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l.sqlite")
    store.close()
    store.close()
    with pytest.raises(LedgerError, match="closed"):
        store.append(_row())


def test_exports_jsonl_and_csv_with_secrets_redacted(tmp_path: Path) -> None:
    key = "sk-test-0123456789abcdef"
    with LedgerStore(tmp_path / "l.sqlite") as store:
        store.append(_row(labels={"topology": "single"}, error=f"bad key {key}"))
        store.append(_row(1, cached_tokens=2, labels={"seed": "7"}))
        store.append_transfer(Transfer(from_role="planner", to_role="solver", tokens=4,
                                       reason="judge unsure"))
        assert store.export_jsonl(tmp_path / "l.jsonl") == 3
        assert store.export_csv(tmp_path / "l.csv") == 2
    lines = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["call", "call", "transfer"]
    assert lines[1]["cached_tokens"] == 2 and lines[0]["cached_tokens"] is None
    with (tmp_path / "l.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["label:topology"] == "single" and rows[1]["label:seed"] == "7"
    assert rows[0]["cached_tokens"] == ""  # unknown stays empty, not 0
    assert (tmp_path / "l.transfers.csv").read_text().count("judge unsure") == 1
    for name in ("l.jsonl", "l.csv"):
        assert key not in (tmp_path / name).read_text()


_WRITER = textwrap.dedent(
    """
    import sys
    from stratagem.budgets import LedgerEntry, LedgerStore
    store = LedgerStore(sys.argv[1])
    i = 0
    while True:
        e = LedgerEntry(call_id=f"c{i:07d}", role="solver", model="m",
                        prompt_tokens=i, completion_tokens=1, labels={"i": str(i)})
        store.append(e)
        # Announce only after append returned: this row is promised to be durable.
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_kill_9_during_appends_loses_no_committed_row(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the writer is up and has committed row 0
    assert first.strip() == "0"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.wait(timeout=10)
    announced = [0, *(int(x) for x in rest.split())]
    with LedgerStore(path) as store:
        rows = store.entries()
    ids = [e.call_id for e in rows]
    # Every announced (committed) row is there, in order, with no gaps and no partial row.
    assert len(ids) >= len(announced)
    assert ids == [f"c{i:07d}" for i in range(len(ids))]
    assert all(e.prompt_tokens == i and e.labels == {"i": str(i)} for i, e in enumerate(rows))
    # At most one row may have been committed after the last announcement.
    assert len(ids) - len(announced) <= 1


def test_a_read_only_store_sees_rows_a_live_writer_has_committed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with LedgerStore(path) as writer:
        writer.append(LedgerEntry(role="solver", model="m", prompt_tokens=4))
        assert path.with_name("ledger.sqlite-wal").exists()  # rows still in the WAL
        with LedgerStore(path, readonly=True) as reader:
            assert reader.totals().prompt_tokens == 4
        writer.append(LedgerEntry(role="judge", model="m", prompt_tokens=1))
    assert TokenLedger.open(path, readonly=True).totals().prompt_tokens == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    (b"", "empty database"),
    (b"not sqlite at all" * 100, "not an SQLite database"),
])
def test_a_read_only_store_refuses_what_is_not_a_ledger(
        tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "ledger.sqlite"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LedgerFormatError, match=message):
        LedgerStore(path, readonly=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None
                                                          else ["ledger.sqlite"])


def test_a_read_only_ledger_shows_requests_lost_in_a_crash_without_writing_them(
        tmp_path: Path) -> None:
    import hashlib
    import socket

    path = tmp_path / "ledger.sqlite"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lost = LedgerEntry(role="solver", model="m", prompt_tokens=30, completion_tokens=200,
                       status="lost", usage_source="bound")
    with LedgerStore(path) as store:
        store.append(LedgerEntry(role="planner", model="m", prompt_tokens=5))
        store.open_intent(lost, f"{socket.gethostname()}:{dead.pid}")  # then the process died
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    seen = TokenLedger.open(path, readonly=True)

    assert lost.call_id in seen and seen.totals().total_tokens == 235
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite"]
    writer = TokenLedger.open(path)  # a writer turns the intent into a row, as before
    assert writer.recovered == 1 and writer.totals().total_tokens == 235
    assert writer.store is not None
    writer.store.close()
