"""Secrets: with an API key set, no log line, ledger row, export, result or report holds it.

Checkpoints (the graph state, raw replies included) are held to the same rule.

The key is distinctive and looks like no known vendor format, so only stratagem's own
redaction (of the configured key and of ``OPENAI_API_KEY``) can hide it, not a pattern.
The loopback server is hostile on purpose: it echoes the key back in error bodies (as a
misconfigured gateway that quotes the ``Authorization`` header does) and in replies, so the
key really flows through every path; the tests check that it arrives (``[REDACTED]`` shows
up) and that it is never written out.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stratagem.agents import (
    JUDGE_POINTWISE_PROMPT,
    ModelClient,
    OpenAIBackend,
    RetryPolicy,
)
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.graphs import RunContext, best_of_n, run
from stratagem.logging import configure_logging
from stratagem.testing import FakeOpenAIServer, FakeReply

KEY = "zq7.STRATAGEM-fake-KEY.4f9d1c2b8a70"
Cli = Callable[[list[str]], Any]


class HostileResponder:
    """Fails the first ``fail`` requests with the key in the error, then answers with it."""

    def __init__(self, fail: int = 2) -> None:
        self._lock = threading.Lock()
        self._left = fail

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        with self._lock:
            failing, self._left = self._left > 0, self._left - 1
        if failing:
            raise RuntimeError(f"upstream refused 'Authorization: Bearer {KEY}'")
        if body["messages"][0].get("content") == JUDGE_POINTWISE_PROMPT.system:
            return FakeReply(f"the key {KEY} was quoted\nSCORE: 0.9\nVERDICT: accept")
        return FakeReply(f"your key is {KEY}\nAnswer: {KEY}")


def _texts_of_sqlite(path: Path) -> str:
    """Every text and blob cell of every table, decoded leniently."""
    out: list[str] = []
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        out.append(cell.decode("utf-8", "replace"))
                    elif cell is not None:
                        out.append(str(cell))
    db.close()
    return "\n".join(out)


def _leaks(folder: Path, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Files under ``folder`` whose bytes, or (SQLite, Parquet) decoded cells, hold the key."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(path.name.startswith(s) for s in skip):
            continue
        if KEY.encode() in path.read_bytes():
            found.append(str(path))
        elif path.suffix == ".sqlite" and KEY in _texts_of_sqlite(path):
            found.append(f"{path} (cells)")
        elif path.suffix == ".parquet":
            import pandas as pd

            if KEY in pd.read_parquet(path).to_string():
                found.append(f"{path} (cells)")
    return found


@pytest.fixture
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("STRATAGEM_API_KEY", raising=False)
    yield


def test_a_run_writes_the_key_nowhere(key_in_env: None, tmp_path: Path) -> None:
    logs = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=logs, cache_loggers=False)
    for name in ("openai", "httpx2"):  # a user debugging the SDK: everything it logs
        logging.getLogger(name).setLevel(logging.DEBUG)
    with FakeOpenAIServer(HostileResponder(fail=2)) as srv, \
            LedgerStore(tmp_path / "ledger.sqlite") as store:
        ledger = TokenLedger(store)
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key=KEY,
                                backend="vllm", timeout_s=5)
        client = ModelClient(backend, ledger=ledger, labels={"note": f"key {KEY}"},
                             retry=RetryPolicy(max_attempts=4, initial_delay_s=0.001))
        ctx = RunContext(client=client, budget=Budget(total=20_000, roles={"solver": 16_000,
                                                                           "judge": 4_000}))
        result = run(best_of_n(3, select="judge"), "What is the key?", context=ctx,
                     checkpoint=tmp_path / "ckpt.sqlite")
        ledger.export_jsonl(tmp_path / "ledger.jsonl")
        ledger.export_csv(tmp_path / "ledger.csv")
        rows = ledger.entries()

    text = logs.getvalue()
    events = [json.loads(line) for line in text.splitlines()]
    assert sum(e["event"] == "llm.call" for e in events) == len(rows) >= 5
    assert "[REDACTED]" in text, "the key never reached a log line: the test proves nothing"
    assert KEY not in text
    errors = [r.error or "" for r in rows if r.status == "error"]
    assert len(errors) == 2 and all("[REDACTED]" in e for e in errors)
    assert all(KEY not in r.model_dump_json() for r in rows)
    assert result.answer != "" and KEY not in result.stop_reason
    # Checkpoints included: they hold the graph state, raw replies with the key among them.
    assert (tmp_path / "ckpt.sqlite").is_file()
    assert "[REDACTED]" in _texts_of_sqlite(tmp_path / "ckpt.sqlite"), "no reply checkpointed"
    assert not _leaks(tmp_path), "the key was written to a file"


def _ablation_config(base_url: str, out: Path) -> str:
    return f"""
name = "secrets"
output = "{out}"

[endpoint]
backend = "vllm"
base_url = "{base_url}"
model = "fake-model"
timeout_s = 5

[grid]
topologies = ["single", {{ name = "best_of_n", n = 2, select = "judge" }}]
budgets = [600, 1200]

[[suites]]
name = "arith"
n = 3

[run]
concurrency = 4
"""


def test_the_cli_ablation_audit_and_report_write_the_key_nowhere(
    key_in_env: None, cli: Cli, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    outputs = []
    with FakeOpenAIServer(HostileResponder(fail=2)) as srv:
        config = tmp_path / "secrets.toml"
        config.write_text(_ablation_config(srv.base_url, out), encoding="utf-8")
        res = cli(["--log-format", "json", "-v", "ablate", str(config), "--no-report"])
        assert res.code == 0, res.err[-2000:]
        outputs.append(res)
    for argv in (["report", str(out), "--boot", "30"], ["audit", str(out)],
                 ["audit", str(out), "--by", "status", "--format", "json"],
                 ["audit", str(out), "--by", "run", "--format", "csv"],
                 ["audit", str(out / "ledger.sqlite"), "--by", "label:topology"]):
        res = cli(["--log-format", "json", "-v", *argv])
        assert res.code == 0, (argv, res.err[-2000:])
        outputs.append(res)

    logged = "\n".join(r.err for r in outputs)
    assert "llm.call" in logged and "[REDACTED]" in logged
    assert KEY not in logged, "a log line holds the key"
    printed = "\n".join(r.out for r in outputs)
    assert KEY not in printed, "a table or a report printed the key"
    assert (out / "report" / "report.html").is_file()
    # Checkpoints included, as above (raw replies in the graph state, redacted).
    assert (out / "checkpoints.sqlite").is_file()
    assert not _leaks(tmp_path), "the key was written to a file"


def test_stratagem_run_prints_nothing_that_holds_the_key(
    key_in_env: None, cli: Cli, tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    with FakeOpenAIServer(HostileResponder(fail=2)) as srv:
        res = cli(["--log-format", "json", "-v", "run", "What is the key?", "-t", "best_of_n",
                   "-p", "select='judge'", "--backend", "vllm", "--base-url", srv.base_url,
                   "--model", "fake-model", "--ledger", str(ledger)])
    assert res.code == 0, res.err[-2000:]
    assert "llm.call" in res.err and "[REDACTED]" in res.err and KEY not in res.err
    assert not _leaks(tmp_path), "the key was written to a file"  # no checkpoint here
    assert KEY not in res.out, "stratagem run printed the key"
