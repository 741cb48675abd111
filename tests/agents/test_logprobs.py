"""Token log-probabilities: asked with ``logprobs``, averaged per reply, ``None`` when absent.

Every transport (direct, SDK over aiohttp, SDK over httpx2), plain and streamed, against the
fake server's ``FakeReply(logprobs=...)``; then the simulated backend's planted signal.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from stratagem.agents import ChatRequest, LLMSolver, ModelClient, OpenAIBackend
from stratagem.simulate import SimEffects, SimulatedModel, sim_tasks
from stratagem.testing import FakeOpenAIServer, FakeReply

MSG = [{"role": "user", "content": "name a fruit"}]
TRANSPORTS = ["direct", "aiohttp", "httpx2"]


def _backend(url: str, transport: str) -> OpenAIBackend:
    return OpenAIBackend("fake-model", base_url=url, api_key="sk-logprobs-000000",
                         backend="vllm", timeout_s=2.0, transport=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_mean_logprob_of_the_reply_is_parsed(transport: str, stream: bool) -> None:
    reply = FakeReply("a ripe banana", logprobs=[-0.5, -1.0, -3.0])
    with FakeOpenAIServer(lambda body: reply) as srv:
        client = ModelClient(_backend(srv.base_url, transport))
        done = client.complete_sync(MSG, role="solver", stream=stream, logprobs=True)
        (record,) = srv.log
    assert record.body["logprobs"] is True and record.body["top_logprobs"] == 0
    assert done.text == "a ripe banana"
    assert done.mean_logprob is not None
    assert math.isclose(done.mean_logprob, -1.5)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_no_logprobs_sent_is_none_not_zero(transport: str, stream: bool) -> None:
    # The server has values but the request did not ask; then asked of a server without any.
    with FakeOpenAIServer(lambda body: FakeReply("a ripe banana", logprobs=-0.2)) as srv:
        client = ModelClient(_backend(srv.base_url, transport))
        unasked = client.complete_sync(MSG, role="solver", stream=stream)
        (record,) = srv.log
    assert "logprobs" not in record.body and unasked.mean_logprob is None
    with FakeOpenAIServer(lambda body: FakeReply("a ripe banana")) as srv:
        client = ModelClient(_backend(srv.base_url, transport))
        asked = client.complete_sync(MSG, role="solver", stream=stream, logprobs=True)
    assert asked.text == "a ripe banana" and asked.mean_logprob is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tokens_without_a_value_are_left_out_of_the_mean(transport: str) -> None:
    with FakeOpenAIServer(lambda body: FakeReply("one two three",
                                                 logprobs=[-1.0, None, -2.0])) as srv:
        client = ModelClient(_backend(srv.base_url, transport))
        done = client.complete_sync(MSG, role="solver", logprobs=True)
    assert done.mean_logprob == pytest.approx(-1.5)


def test_the_solver_carries_the_mean_logprob_only_when_asked() -> None:
    with FakeOpenAIServer(lambda body: FakeReply("Answer: 4", logprobs=-0.25)) as srv:
        client = ModelClient(_backend(srv.base_url, "direct"))

        async def both() -> tuple[Any, Any]:
            solver = LLMSolver()
            return (await solver.solve(client, "2 + 2?", logprobs=True),
                    await solver.solve(client, "2 + 2?"))

        with_lp, without = asyncio.run(both())
    assert with_lp.answer == "4" and with_lp.mean_logprob == pytest.approx(-0.25)
    assert without.mean_logprob is None


def _ask(model: SimulatedModel, question: str, *, seed: int, logprobs: bool) -> Any:
    request = ChatRequest(messages=[{"role": "user", "content": question}], model="simulated",
                          max_output=256, seed=seed, role="solver", logprobs=logprobs)
    return asyncio.run(model.send(request))


def test_the_simulator_plants_lower_logprobs_on_harder_tasks() -> None:
    tasks = sim_tasks([("easy one?", "1", 0.1), ("hard one?", "2", 0.9)])
    model = SimulatedModel(tasks, SimEffects(), seed=3)
    easy = [_ask(model, "easy one?", seed=s, logprobs=True).mean_logprob for s in range(20)]
    hard = [_ask(model, "hard one?", seed=s, logprobs=True).mean_logprob for s in range(20)]
    assert all(v is not None and v <= 0 for v in easy + hard)
    assert sum(easy) / 20 > sum(hard) / 20 + 0.5
    # Deterministic per seed, and asking for log-probabilities changes no answer.
    again = _ask(model, "hard one?", seed=4, logprobs=True)
    assert again.mean_logprob == hard[4]
    assert again.text == _ask(model, "hard one?", seed=4, logprobs=False).text
    assert _ask(model, "hard one?", seed=4, logprobs=False).mean_logprob is None


def test_no_planted_weight_means_no_signal() -> None:
    tasks = sim_tasks([("easy one?", "1", 0.1), ("hard one?", "2", 0.9)])
    model = SimulatedModel(tasks, SimEffects(logprob_weight=0.0, logprob_noise=0.0), seed=3)
    values = {_ask(model, q, seed=1, logprobs=True).mean_logprob
              for q in ("easy one?", "hard one?")}
    assert values == {-0.2}
