"""Concurrent runs share one client (the ablation runner does): one run ending must not close
the connections another run is using."""

from __future__ import annotations

import asyncio

from stratagem.agents import ModelClient, OpenAIBackend, RetryPolicy
from stratagem.budgets import Budget
from stratagem.graphs import RunContext, arun, single
from stratagem.testing import FakeOpenAIServer, FakeReply


def test_runs_sharing_a_client_do_not_close_each_others_connections() -> None:
    with FakeOpenAIServer(lambda body: FakeReply("Answer: 7"), latency=0.05) as srv:
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="sk-test-000000",
                                backend="vllm")
        client = ModelClient(backend, retry=RetryPolicy(max_attempts=1),
                             concurrency={backend.endpoint: 4})
        graph = single()

        async def main() -> list[str]:
            async def one(i: int) -> str:
                await asyncio.sleep(0.01 * i)  # staggered: runs end while others are in flight
                ctx = RunContext(client=client, budget=Budget(total=2000))
                return (await arun(graph, f"task {i}", context=ctx)).answer
            try:
                return list(await asyncio.gather(*(one(i) for i in range(12))))
            finally:
                await client.aclose()

        answers = asyncio.run(main())
    assert answers == ["7"] * 12
    assert client.ledger.totals().error_calls == 0
