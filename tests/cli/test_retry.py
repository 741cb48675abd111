"""``stratagem ablate`` exits 1 when runs lost calls, and ``--retry-failed`` reruns only those.

A loopback server fails every request about two of the four tasks (HTTP 500 through every
retry), then recovers. The first ablation writes all four records and exits 1 with one line
that says how many runs lost calls and how to rerun them; a plain rerun skips every run and
still exits 1; ``--retry-failed`` reruns exactly the two, asking their failed calls again,
and exits 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import ResultsStore, needs_retry
from stratagem.budgets import TokenLedger
from stratagem.tasks import get_suite
from stratagem.testing import FakeOpenAIServer, FakeReply

Cli = Callable[..., Any]

CONFIG = """\
name = "retry"
output = "{output}"

[endpoint]
backend = "vllm"
base_url = "{base_url}"
model = "fake-model"
timeout_s = 5

[grid]
topologies = ["single"]
budgets = [400]

[[suites]]
name = "arith"
n = 4

[run]
concurrency = 4
durable = {durable}
"""

TASKS = get_suite("arith").generate(4, seed=0)
FAILING = {TASKS[0].question, TASKS[2].question}


class FlakyForSome:
    """HTTP 500 for every request about a FAILING task until healed; right answers otherwise."""

    def __init__(self) -> None:
        self.healed = False
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        task = next(t for t in TASKS if t.question in text)
        with self._lock:
            self.asked.append(task.question)
        if task.question in FAILING and not self.healed:
            raise RuntimeError("upstream is down")  # the fake server answers HTTP 500
        return FakeReply(f"Working.\nAnswer: {task.answer}")


def _records(out: Path) -> dict[str, Any]:
    with ResultsStore(out / "results.sqlite", readonly=True) as rs:
        return {r.task_id: r for r in rs.records()}


@pytest.mark.parametrize("durable", ["true", "false"])
def test_lost_calls_exit_1_and_retry_failed_reruns_exactly_those_runs(
        cli: Cli, tmp_path: Path, durable: str) -> None:
    out = tmp_path / "out"
    responder = FlakyForSome()
    with FakeOpenAIServer(responder) as srv:
        config = tmp_path / "retry.toml"
        config.write_text(CONFIG.format(output=out.as_posix(), base_url=srv.base_url,
                                        durable=durable), encoding="utf-8")

        first = cli("ablate", config, "--no-report")
        assert first.code == 1, first.err
        assert "2 of 4 run(s) lost model calls to endpoint failures" in first.out
        assert f"rerun just those: stratagem ablate {config} --retry-failed" in first.out
        before = _records(out)
        assert len(before) == 4
        lost = {tid for tid, r in before.items() if needs_retry(r)}
        assert lost == {t.id for t in TASKS if t.question in FAILING}
        assert all(before[tid].failed_calls == 1 and not before[tid].correct for tid in lost)

        asked = len(responder.asked)
        plain = cli("ablate", config, "--no-report")
        assert plain.code == 1 and "0 run(s) done, 4 already done before" in plain.out
        assert len(responder.asked) == asked  # a plain rerun skips finished runs, as before
        assert _records(out) == before

        responder.healed = True
        retried = cli("ablate", config, "--no-report", "--retry-failed")
        assert retried.code == 0, retried.out + retried.err
        assert "2 run(s) that lost calls or failed rerun, 0 failed again" in retried.out
        assert set(responder.asked[asked:]) == FAILING  # exactly those runs, nothing else

        nothing = cli("ablate", config, "--no-report", "--retry-failed")
        assert nothing.code == 0 and "nothing to retry" in nothing.out

    after = _records(out)
    for tid, record in after.items():
        if tid not in lost:
            assert record == before[tid]  # untouched
            continue
        assert record.correct and record.failed_calls == 0
        assert record.run_id == before[tid].run_id
        ledger = TokenLedger.open(out / "ledger.sqlite", readonly=True)
        rows = ledger.entries(run_id=record.run_id)
        # The failed attempts stay in the ledger (billed) and in the record; the call asked
        # again is the only one with the label retry=1; nothing is counted twice.
        failed = [e for e in rows if e.status == "error"]
        again = [e for e in rows if e.labels.get("retry") == "1"]
        assert failed and {e.labels.get("retry") for e in failed} == {None}
        assert again and all(e.status == "ok" for e in again)
        assert (record.calls, record.error_calls) == (len(rows), len(failed))
        assert len(rows) == len(failed) + len(again) == before[tid].calls + len(again)
        assert record.tokens_total == sum(e.prompt_tokens + e.completion_tokens for e in rows)


class OneSampleDown:
    """HTTP 500 for the second sample (seed 1) of the FAILING tasks until healed."""

    def __init__(self) -> None:
        self.healed = False
        self.asked: list[tuple[str, int | None]] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        task = next(t for t in TASKS if t.question in text)
        with self._lock:
            self.asked.append((task.question, body.get("seed")))
        if task.question in FAILING and body.get("seed") == 1 and not self.healed:
            raise RuntimeError("upstream is down")
        return FakeReply(f"Working.\nAnswer: {task.answer}")


def test_a_retry_replays_the_calls_that_succeeded_and_asks_only_the_lost_one(
        cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    responder = OneSampleDown()
    with FakeOpenAIServer(responder) as srv:
        config = tmp_path / "retry.toml"
        text = CONFIG.format(output=out.as_posix(), base_url=srv.base_url, durable="true")
        text = text.replace('topologies = ["single"]',
                            'topologies = [{ name = "best_of_n", n = 3, select = "vote" }]')
        config.write_text(text.replace("budgets = [400]", "budgets = [1600]"),
                          encoding="utf-8")
        assert cli("ablate", config, "--no-report").code == 1
        before = _records(out)
        asked = len(responder.asked)

        responder.healed = True
        assert cli("ablate", config, "--no-report", "--retry-failed").code == 0

    # One request per retried run: the lost sample. The two that succeeded were replayed.
    assert sorted(responder.asked[asked:]) == sorted((q, 1) for q in FAILING)
    after = _records(out)
    for tid, record in after.items():
        if tid in {t.id for t in TASKS if t.question in FAILING}:
            assert before[tid].failed_calls == 1 and record.failed_calls == 0
            assert record.calls == before[tid].calls + 1
        else:
            assert record == before[tid]
