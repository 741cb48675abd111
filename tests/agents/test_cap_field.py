"""A server that ignores the output-cap field: at most one reply overshoots, then it holds.

``FakeOpenAIServer(honours=("max_tokens",))`` obeys only ``max_tokens`` (as Ollama and
llama-cpp-python do); ``backend="openai"`` sends ``max_completion_tokens``. A fan-out of 8
concurrent calls goes to it: the first call probes the endpoint alone, overshoots, the client
warns ``llm.cap_ignored`` once and switches the field, and the 7 others are capped.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from stratagem.agents import (
    EndpointConfig,
    LLMSolver,
    ModelClient,
    OpenAIBackend,
    build_backend,
)
from stratagem.budgets import Budget, TokenLedger
from stratagem.graphs import RunContext, arun, best_of_n
from stratagem.testing import FakeOpenAIServer, FakeReply

CAP = 8
LONG = FakeReply(" ".join(["word"] * 60) + "\nAnswer: 42")


def _fan_out(client: ModelClient, n: int = 8) -> None:
    async def main() -> None:
        try:
            await asyncio.gather(*(
                client.complete([{"role": "user", "content": f"question {i}"}], role="solver",
                                branch=str(i), max_output=CAP)
                for i in range(n)))
        finally:
            await client.aclose()

    asyncio.run(main())


def _cap_fields(srv: FakeOpenAIServer) -> list[str]:
    return [next(k for k in ("max_tokens", "max_completion_tokens") if k in (r.body or {}))
            for r in srv.log if r.path.endswith("/chat/completions")]


def test_a_fan_out_overshoots_on_one_call_then_the_field_is_switched() -> None:
    with FakeOpenAIServer(lambda body: LONG, honours=("max_tokens",)) as srv:
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="test",
                                backend="openai")
        assert backend.capabilities.output_cap_param == "max_completion_tokens"
        ledger = TokenLedger()
        client = ModelClient(backend, ledger=ledger, concurrency={backend.endpoint: 8})
        with capture_logs() as logs:
            _fan_out(client)
        fields = _cap_fields(srv)

    warnings = [e for e in logs if e["event"] == "llm.cap_ignored"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["cap_field"] == "max_completion_tokens"
    assert warnings[0]["action"] == "switched to max_tokens"
    assert backend.capabilities.output_cap_param == "max_tokens"
    # The first request carried the ignored field; every later one the honoured one.
    assert fields == ["max_completion_tokens"] + ["max_tokens"] * 7
    rows = ledger.entries()
    assert len(rows) == 8 and all(r.usage_source == "provider" for r in rows)
    over = [r for r in rows if r.completion_tokens > (r.cap_sent or 0)]
    assert len(over) == 1 and over[0].cap_overshoot == 62 - CAP
    assert all(r.cap_sent == CAP for r in rows)
    assert warnings[0]["completion"] == over[0].completion_tokens


def test_a_best_of_n_run_overshoots_on_at_most_one_sample() -> None:
    with FakeOpenAIServer(lambda body: LONG, honours=("max_tokens",)) as srv:
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="test",
                                backend="openai")
        ledger = TokenLedger()
        client = ModelClient(backend, ledger=ledger, concurrency={backend.endpoint: 8})
        ctx = RunContext(client=client, budget=Budget(total=10_000),
                         solver=LLMSolver(max_output=CAP))

        async def main() -> None:
            try:
                await arun(best_of_n(8, select="vote"), "What is 6*7?", context=ctx)
            finally:
                await client.aclose()

        with capture_logs() as logs:
            asyncio.run(main())
        fields = _cap_fields(srv)

    assert [e["event"] for e in logs].count("llm.cap_ignored") == 1
    assert fields.count("max_completion_tokens") == 1 and fields[0] == "max_completion_tokens"
    rows = ledger.entries()
    assert len(rows) == 8
    assert sum(1 for r in rows if r.cap_overshoot > 0) == 1


@pytest.mark.parametrize("how", ["argument", "config"])
def test_cap_field_set_explicitly_means_no_overshoot_at_all(how: str) -> None:
    with FakeOpenAIServer(lambda body: LONG, honours=("max_tokens",)) as srv:
        if how == "argument":
            backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="test",
                                    backend="openai", cap_field="max_tokens")
        else:  # [endpoint] cap_field = "max_tokens" (what `stratagem run --cap-field` sets)
            built = build_backend(EndpointConfig(backend="openai", base_url=srv.base_url,
                                                 model="fake-model", cap_field="max_tokens"))
            assert isinstance(built, OpenAIBackend)
            backend = built
        ledger = TokenLedger()
        client = ModelClient(backend, ledger=ledger, concurrency={backend.endpoint: 8})
        with capture_logs() as logs:
            _fan_out(client)
        fields = _cap_fields(srv)

    assert not [e for e in logs if e["event"] == "llm.cap_ignored"]
    assert fields == ["max_tokens"] * 8
    rows = ledger.entries()
    assert len(rows) == 8
    assert all(r.completion_tokens == CAP == r.cap_sent and r.cap_overshoot == 0 for r in rows)
