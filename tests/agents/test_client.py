from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from stratagem.agents import ModelClient, OpenAIBackend, RetryPolicy
from stratagem.budgets import Budget, LedgerStore, TokenLedger, Usage
from stratagem.errors import (
    BudgetExceeded,
    ContextLengthExceeded,
    ModelError,
    TransientModelError,
)
from stratagem.testing import (
    FakeOpenAIServer,
    FakeReply,
    Fault,
    FunctionModel,
    ScriptedModel,
    ScriptedReply,
)

MSG = [{"role": "user", "content": "What is 6 times 7?"}]
FAST = RetryPolicy(max_attempts=3, initial_delay_s=0.001, max_delay_s=0.002)


def test_every_attempt_is_recorded_and_failed_usage_is_charged() -> None:
    failed_usage = Usage(30, 0)
    script = [
        TransientModelError("HTTP 500", status_code=500),
        TransientModelError("HTTP 503 with usage", status_code=503, usage=failed_usage),
        ScriptedReply("Answer: 42", prompt_tokens=20, completion_tokens=4, cached_tokens=8),
    ]
    with ScriptedModel(script) as model:
        client = ModelClient(model, retry=FAST, run_id="r1", labels={"topology": "single"})
        done = client.complete_sync(MSG, role="solver", node="solve", branch="0")
    rows = client.ledger.entries()
    assert [(r.attempt, r.status, r.total_tokens, r.usage_source) for r in rows] == [
        (1, "error", 0, "none"), (2, "error", 30, "provider"), (3, "ok", 24, "provider")]
    assert done.attempts == tuple(rows) and done.entry is rows[-1]
    assert done.billed_tokens == 54 == client.ledger.totals().total_tokens
    assert rows[-1].cached_tokens == 8 and rows[0].cached_tokens is None
    assert {r.run_id for r in rows} == {"r1"}
    assert {r.labels["topology"] for r in rows} == {"single"}
    assert len({r.call_id for r in rows}) == 3


def test_non_transient_errors_are_not_retried() -> None:
    with ScriptedModel([ModelError("HTTP 401: bad key", status_code=401)]) as model:
        client = ModelClient(model, retry=FAST)
        with pytest.raises(ModelError, match="401"):
            client.complete_sync(MSG, role="judge")
    assert [r.status for r in client.ledger.entries()] == ["error"]
    with ScriptedModel([ContextLengthExceeded("too long", status_code=400)]) as model:
        client = ModelClient(model, retry=FAST)
        with pytest.raises(ContextLengthExceeded):
            client.complete_sync(MSG, role="solver")
    assert len(client.ledger) == 1


def test_gives_up_after_max_attempts_with_a_clear_error() -> None:
    with ScriptedModel([TransientModelError("HTTP 429", status_code=429, retry_after=0)] * 3
                       ) as model:
        client = ModelClient(model, retry=FAST)
        with pytest.raises(ModelError, match="gave up after 3 attempt"):
            client.complete_sync(MSG, role="solver")
    assert client.ledger.totals().error_calls == 3


def test_overlong_retry_after_gives_up_instead_of_stalling() -> None:
    with ScriptedModel([TransientModelError("HTTP 429", retry_after=3600)]) as model:
        client = ModelClient(model, retry=FAST)
        with pytest.raises(ModelError, match="more than"):
            client.complete_sync(MSG, role="solver")


def test_missing_usage_becomes_a_flagged_estimate() -> None:
    with ScriptedModel([ScriptedReply("forty-two", usage=False)]) as model:
        client = ModelClient(model)
        done = client.complete_sync(MSG, role="solver")
    assert done.usage.source == "estimate" and done.usage.prompt_tokens > 0
    (row,) = client.ledger.entries()
    assert row.usage_source == "estimate" and row.completion_tokens > 0


def test_budget_clamps_the_cap_and_refuses_when_nothing_fits() -> None:
    budget = Budget(total=60, roles={"solver": 40})
    with ScriptedModel([ScriptedReply("word " * 100)]) as model:
        client = ModelClient(model, budget=budget)
        done = client.complete_sync(MSG, role="solver", max_output=500)
    sent = model.requests[0].max_output
    assert sent < 40 and done.usage.completion_tokens <= sent
    assert done.finish_reason == "length"
    assert budget.spent("solver") == done.usage.total_tokens <= 40
    with ScriptedModel([]) as model:
        client = ModelClient(model, budget=budget)
        with pytest.raises(BudgetExceeded):
            client.complete_sync(MSG, role="solver")
    assert len(client.ledger) == 0  # nothing was sent, nothing recorded


def test_concurrent_calls_share_one_budget_without_overspending() -> None:
    budget = Budget(total=100_000, roles={"solver": 2_000})

    def reply(messages: object, request: object) -> ScriptedReply:
        return ScriptedReply("token " * 30)

    client = ModelClient(FunctionModel(reply), budget=budget)

    async def one(i: int) -> int:
        try:
            done = await client.complete(MSG, role="solver", branch=str(i), max_output=30)
        except BudgetExceeded:
            return 0
        return done.usage.total_tokens

    async def main() -> list[int]:
        try:
            return list(await asyncio.gather(*(one(i) for i in range(200))))
        finally:
            await client.aclose()

    spent = asyncio.run(main())
    assert sum(spent) == budget.spent("solver") == client.ledger.totals().total_tokens
    assert budget.spent("solver") <= 2_000
    assert sum(1 for s in spent if s) >= 40


def test_cancelled_call_is_recorded_as_cancelled() -> None:
    async def slow(messages: object, request: object) -> str:
        await asyncio.sleep(10)
        return "never"

    budget = Budget(total=1000)
    client = ModelClient(FunctionModel(slow), budget=budget)

    async def main() -> None:
        task = asyncio.create_task(client.complete(MSG, role="solver"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (row,) = client.ledger.entries()
    assert row.status == "cancelled" and budget.reserved() == 0
    assert row.total_tokens == 0 and row.usage_source == "none"  # no server said 0


def test_durable_store_has_the_row_before_the_caller_sees_the_result(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l.sqlite")
    seen: list[int] = []

    def check(messages: object, request: object) -> str:
        return "ok"

    client = ModelClient(FunctionModel(check), ledger=TokenLedger(store))
    done = client.complete_sync(MSG, role="solver")
    with LedgerStore(tmp_path / "l.sqlite") as other:  # a second connection sees it committed
        seen.append(len(other))
        assert done.call_id in other
    assert seen == [1]
    store.close()


def test_one_llm_call_event_per_attempt_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abcdefghijklmnop0000")
    with ScriptedModel([TransientModelError("boom sk-abcdefghijklmnop0000"), "ok"]) as model:
        client = ModelClient(model, retry=FAST, run_id="r9")
        with capture_logs() as logs:
            done = client.complete_sync(MSG, role="judge", node="judge")
    calls = [e for e in logs if e["event"] == "llm.call"]
    assert [e["call_id"] for e in calls] == [r.call_id for r in client.ledger.entries()]
    assert calls[-1]["call_id"] == done.call_id and calls[-1]["role"] == "judge"
    assert all("sk-abcdefghijklmnop0000" not in str(e) for e in calls)


def test_role_routing_and_bind() -> None:
    with ScriptedModel(["planner says"], model="big") as big, ScriptedModel(
        ["solver says"], model="small"
    ) as small:
        client = ModelClient(small, roles={"planner": big})
        bound = client.bind(run_id="r2", labels={"seed": "1"})
        assert bound.complete_sync(MSG, role="planner").model == "big"
        assert bound.complete_sync(MSG, role="solver").model == "small"
    assert {r.run_id for r in client.ledger.entries()} == {"r2"}
    assert client.run_id == ""


def test_complete_sync_refuses_inside_a_running_loop() -> None:
    client = ModelClient(FunctionModel(lambda m, r: "x"))

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"await client\.complete"):
            client.complete_sync(MSG, role="solver")

    asyncio.run(main())


# -- dispatch order in a fan-out ----------------------------------------------------------------

def test_concurrent_calls_put_each_request_on_the_wire_before_the_next_starts() -> None:
    """Each request gets the few event-loop steps it needs to be sent (as aiohttp's writer
    task does on Python 3.11) before the next call starts preparing its own, so replies come
    back staggered instead of all at once."""
    events: list[str] = []

    async def respond(messages: object, request: object) -> str:
        seed = getattr(request, "seed", None)
        events.append(f"prepare {seed}")
        await asyncio.sleep(0)  # the transport's own task writes the bytes
        events.append(f"sent {seed}")
        await asyncio.sleep(0.01)  # the server's latency
        return "Answer: 1"

    client = ModelClient(FunctionModel(respond))

    async def fan_out() -> None:
        await asyncio.gather(*(client.complete(MSG, role="solver", seed=i) for i in range(8)))

    asyncio.run(fan_out())
    expected = [e for i in range(8) for e in (f"prepare {i}", f"sent {i}")]
    assert events == expected
    assert len(client.ledger) == 8


def test_a_call_cancelled_while_its_request_is_being_sent_cancels_the_request() -> None:
    started: list[int] = []
    finished: list[int] = []

    async def respond(messages: object, request: object) -> str:
        started.append(1)
        await asyncio.sleep(0.2)
        finished.append(1)
        return "Answer: 1"

    client = ModelClient(FunctionModel(respond))

    async def cancel_early() -> None:
        call = asyncio.ensure_future(client.complete(MSG, role="solver"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.3)  # a request left running would finish by now

    asyncio.run(cancel_early())
    assert started and not finished
    (row,) = client.ledger.entries()
    assert row.status == "cancelled"


@pytest.mark.parametrize("steps", range(1, 7))
def test_a_reply_that_finished_before_its_caller_was_cancelled_is_billed(steps: int) -> None:
    """Cancelled at any point, a call whose backend already answered keeps that answer's
    usage in its (cancelled) row; one whose backend had not answered is charged nothing."""
    answered: list[int] = []

    async def respond(messages: object, request: object) -> ScriptedReply:
        await asyncio.sleep(0)
        answered.append(1)
        return ScriptedReply("Answer: 1", prompt_tokens=9, completion_tokens=3)

    client = ModelClient(FunctionModel(respond))

    async def cancel_after() -> None:
        call = asyncio.ensure_future(client.complete(MSG, role="solver"))
        for _ in range(steps):
            await asyncio.sleep(0)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call

    asyncio.run(cancel_after())
    (row,) = client.ledger.entries()
    if row.status == "ok":
        assert answered and row.total_tokens == 12
    elif answered:
        assert row.status == "cancelled" and row.total_tokens == 12, row
        assert row.usage_source == "provider"
    else:
        assert row.status == "cancelled" and row.total_tokens == 0


def test_event_loops_are_not_kept_alive_by_the_client() -> None:
    """Per-loop limits and the send gate are dropped when their loop ends."""
    import gc
    import weakref

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def respond(messages: object, request: object) -> str:
        await asyncio.sleep(0.001)
        return "Answer: 1"

    client = ModelClient(FunctionModel(respond))

    async def fan_out() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await asyncio.gather(*(client.complete(MSG, role="solver") for _ in range(8)))

    for _ in range(3):
        asyncio.run(fan_out())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
    assert len(client.ledger) == 24


def test_an_allowance_too_small_for_the_prompt_says_so_not_zero_spent() -> None:
    budget = Budget(total=400)
    client = ModelClient(FunctionModel(lambda m, r: "ok"), budget=budget)
    client.complete_sync(MSG, role="solver", max_output=300)  # most of the run's budget goes
    with pytest.raises(BudgetExceeded) as info:
        client.complete_sync(MSG, role="solver", allowance=12)
    message = str(info.value)
    assert info.value.scope == "allowance" and "allowance of 12 tokens" in message
    assert "already spent" not in message  # the run's spend is not what refused it
    assert len(client.ledger) == 1  # nothing was sent


LONG_PROMPT = [{"role": "user", "content": "Count the words of this text. " + "lorem " * 400}]


def test_a_long_prompt_is_not_tokenized_when_no_cap_applies() -> None:
    from stratagem.budgets import chat_tokens_bound, count_chat_tokens

    held: list[int] = []

    def reply(messages: object, request: object) -> ScriptedReply:
        held.append(budget.reserved())  # what the call reserved, while it runs
        return ScriptedReply("four hundred", prompt_tokens=410, completion_tokens=3)

    bound, counted = chat_tokens_bound(LONG_PROMPT), count_chat_tokens(LONG_PROMPT, "m")
    assert bound > 2 * counted  # (bytes: a loose bound, but computed without BPE)
    # No cap: the byte bound is what is held, no tokenizer run. A cap, however roomy: the
    # prompt is counted, so a concurrent sibling is never refused for a looser reservation.
    for budget, loose in ((Budget(roles={"judge": 100}), True),
                          (Budget(total=10_000_000), False)):
        client = ModelClient(FunctionModel(reply, model="m"), budget=budget)
        done = client.complete_sync(LONG_PROMPT, role="solver", max_output=16)
        assert (held[-1] >= bound + 16) is loose and (held[-1] < bound) is not loose
        assert done.entry.prompt_tokens == 410 and budget.spent() == 413


def test_a_lost_reply_of_a_long_prompt_charges_the_counted_prompt_not_the_bound() -> None:
    from stratagem.budgets import count_chat_tokens

    with FakeOpenAIServer(lambda body: FakeReply("ok")) as srv:
        srv.enqueue_faults([Fault.malformed_json()])
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, backend="vllm")
        client = ModelClient(backend,  # no budget: the call holds the byte bound
                             retry=RetryPolicy(max_attempts=2, initial_delay_s=0.001))
        client.complete_sync(LONG_PROMPT, role="solver", max_output=16)
    lost, ok = client.ledger.entries()
    assert lost.usage_source == "bound" and ok.usage_source == "provider"
    assert lost.prompt_tokens == count_chat_tokens(LONG_PROMPT, "fake-model")
