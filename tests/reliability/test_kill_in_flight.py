"""A process SIGKILLed with requests in flight to a real endpoint: every request the server
saw is in the ledger afterwards, the unanswered ones as ``lost`` rows charged at their
reservation, and the ledger is at least what the server billed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from stratagem.budgets import LedgerStore, TokenLedger
from stratagem.testing import FakeOpenAIServer, FakeReply

CHILD = """
import asyncio, sys
from stratagem.agents import ModelClient, OpenAIBackend, RetryPolicy
from stratagem.budgets import LedgerStore, TokenLedger

backend = OpenAIBackend("fake-model", base_url=sys.argv[2], api_key="sk-kill-test-000000",
                        backend="vllm", timeout_s=30)
client = ModelClient(backend, ledger=TokenLedger(LedgerStore(sys.argv[1])),
                     retry=RetryPolicy(max_attempts=1), concurrency={backend.endpoint: 8})

async def main():
    first = await client.complete([{"role": "user", "content": "warm up"}], role="solver",
                                  max_output=24)  # answered: a row with the provider's usage
    calls = [asyncio.create_task(client.complete(
        [{"role": "user", "content": f"question {i}"}], role="solver", max_output=24))
        for i in range(6)]
    print("SENT", flush=True)
    await asyncio.sleep(60)  # killed by the test once the server holds all six

asyncio.run(main())
"""


HOLD_S = 3.0
"""How long the server holds each of the six questions."""


def test_every_request_the_server_saw_is_in_the_ledger_after_a_kill(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite"
    reply = FakeReply("one two three four five six seven eight")

    def answer(body: dict[str, Any]) -> FakeReply:
        # the warm-up call is answered at once; the six questions are held
        if "question" in str(body["messages"][0]["content"]):
            time.sleep(HOLD_S)
        return reply

    with FakeOpenAIServer(answer) as srv:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(ledger_path), srv.base_url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # SIGKILL once the server holds all six (however slow the machine), none answered
        deadline = time.monotonic() + 60
        while srv.requests < 7 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL and "SENT" in out, err[-2000:]
        assert srv.requests == 7, f"the server saw {srv.requests} requests before the kill"
        time.sleep(HOLD_S + 0.5)  # the held requests finish on the server side (and are billed)
        records = [r for r in srv.log if r.path.endswith("/chat/completions")]
        billed = srv.billed_usage_totals()

    with LedgerStore(ledger_path) as store:
        ledger = TokenLedger(store)
        rows = ledger.entries()
        assert store.intents() == []  # every intent of the dead process became a row
    ok = [r for r in rows if r.status == "ok"]
    lost = [r for r in rows if r.status == "lost"]
    # Every request the server saw has a row: the six unanswered ones as lost rows.
    assert len(ok) == 1 and len(rows) == len(records) == 7, [r.body for r in records]
    assert len(lost) == 6 and ledger.recovered == 6
    assert all(r.usage_source == "bound" and r.completion_tokens == r.cap_sent == 24
               for r in lost)
    assert sum(r.total_tokens for r in rows) >= billed.total_tokens
    assert ledger.totals().lost_calls == 6
