"""Integration: the client and the four roles against the real embedded llama.cpp server."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator

import pytest

from stratagem.agents import (
    ChatRequest,
    ChatResponse,
    LLMDecomposer,
    LLMJudge,
    LLMPlanner,
    LLMSolver,
    LocalModelServer,
    ModelClient,
    OpenAIBackend,
)
from stratagem.budgets import Budget, Usage
from stratagem.errors import OutputParseError

pytestmark = pytest.mark.integration

TASK = "What is 3 + 4?"


class Recording(OpenAIBackend):
    """The real backend, remembering the usage each response carried."""

    seen: list[Usage | None]

    async def send(self, request: ChatRequest) -> ChatResponse:
        response = await super().send(request)
        self.seen.append(response.usage)
        return response


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    if importlib.util.find_spec("llama_cpp") is None:  # importing it opens /dev/null
        pytest.skip("needs the `local` extra")
    with LocalModelServer() as srv:
        yield srv


def _backend(server: LocalModelServer) -> Recording:
    backend = Recording(server.model, base_url=server.base_url, api_key="local",
                        backend="llama-cpp-python")
    backend.seen = []
    return backend


def test_every_row_is_the_servers_usage_and_the_cap_holds(server: LocalModelServer) -> None:
    backend = _backend(server)
    budget = Budget(total=5_000)
    client = ModelClient(backend, budget=budget)

    async def main() -> None:
        try:
            for cap in (4, 16, 32):
                done = await client.complete([{"role": "user", "content": "Count to twenty."}],
                                             role="solver", max_output=cap, temperature=0.0)
                assert done.usage.completion_tokens <= cap
        finally:
            await client.aclose()

    asyncio.run(main())
    rows = client.ledger.entries()
    assert len(rows) == len(backend.seen) == 3
    for row, usage in zip(rows, backend.seen, strict=True):
        assert usage is not None and row.usage_source == "provider"
        assert (row.prompt_tokens, row.completion_tokens) == (usage.prompt_tokens,
                                                              usage.completion_tokens)
        assert row.cached_tokens is None and row.reasoning_tokens is None  # not reported
    assert budget.spent() == client.ledger.totals().total_tokens


def test_each_role_parses_or_fails_clearly_and_is_recorded(server: LocalModelServer) -> None:
    client = ModelClient(_backend(server))

    async def main() -> dict[str, str]:
        outcomes: dict[str, str] = {}
        calls = {
            "planner": LLMPlanner(max_output=96).plan(client, TASK, roles_available=("solver",),
                                                     budget_tokens=2000),
            "decomposer": LLMDecomposer(max_output=128).decompose(client, TASK),
            "solver": LLMSolver(max_output=48).solve(client, TASK, temperature=0.0),
            "judge": LLMJudge(max_output=64).score(client, TASK, "Answer: 7"),
        }
        try:
            for role, call in calls.items():
                try:
                    await call
                    outcomes[role] = "parsed"
                except OutputParseError as exc:
                    assert role in str(exc)  # the failure names the role
                    outcomes[role] = "unparseable"
        finally:
            await client.aclose()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes["solver"] == "parsed"  # free text always yields an answer
    by_role = client.ledger.group_by("role")
    for role, outcome in outcomes.items():
        calls = by_role[role].calls
        # One call when it parsed (or two after a repair); exactly two when it did not.
        assert calls == 2 if outcome == "unparseable" else calls in (1, 2)
    assert all(e.status == "ok" for e in client.ledger.entries())
