"""The ``compute_optimal`` graph: the probe's signal, and the option it goes on with."""

from __future__ import annotations

from typing import Any

import pytest

from stratagem.agents import ChatRequest, ChatResponse, Message, ModelClient
from stratagem.budgets import CalibrationTable, PoolSample, Usage
from stratagem.errors import ConfigError
from stratagem.graphs import RunContext, compute_optimal, run
from stratagem.testing import FunctionModel


def _table(signal: str, *, options: dict[str, list[tuple[bool, int] | None]] | None = None,
           ) -> CalibrationTable:
    # Confident failed probes (-0.1) pass on the next sample; unsure ones (-3) never do.
    pools = ([[PoolSample("1", False, 10, -0.1), PoolSample("2", True, 10)]] * 4
             + [[PoolSample("1", False, 10, -3.0), PoolSample("1", False, 10)]] * 4)
    return CalibrationTable.fit(pools, probe=1, samples=(2,), verifier=True,
                                signal=signal, logprob_bins=2, runs=options)


def _model(logprob: float | None) -> FunctionModel:
    def reply(messages: list[Message], request: ChatRequest) -> ChatResponse:
        lp = logprob if request.logprobs else None
        return ChatResponse("Answer: 1", Usage(5, 3), "stop", None, "function", lp)

    return FunctionModel(reply)


def _verifier(text: str) -> bool:
    return text.strip().endswith("2")


@pytest.mark.parametrize(("logprob", "mode"), [(-0.05, "sequential:2"), (-4.0, "stop")])
def test_the_probe_asks_for_logprobs_and_its_bin_decides(logprob: float, mode: str) -> None:
    table = _table("logprob")
    assert table.edges and table.best("lp2/2", 2e-2).option == "sequential:2"
    assert table.best("lp1/2", 2e-2).option == "stop"
    model = _model(logprob)
    result = run(compute_optimal(table, price=2e-2), "q?",
                 context=RunContext(client=ModelClient(model), verifier=_verifier))
    plan: dict[str, Any] = dict(result.state["plan"] or {})
    assert plan["mode"] == mode and plan["probe_logprob"] == logprob
    # Only the probe's call asked; a second sample (if any) did not.
    assert [r.logprobs for r in model.requests] == [True] + [False] * (len(model.requests) - 1)
    assert len(model.requests) == (2 if mode == "sequential:2" else 1)


def test_without_logprobs_from_the_server_the_bin_is_unknown() -> None:
    result = run(compute_optimal(_table("logprob"), price=2e-2), "q?",
                 context=RunContext(client=ModelClient(_model(None)), verifier=_verifier))
    plan: dict[str, Any] = dict(result.state["plan"] or {})
    assert plan["bin"] == "lp?" and plan["probe_logprob"] is None


def test_an_agreement_table_does_not_ask_for_logprobs() -> None:
    model = _model(-0.05)
    run(compute_optimal(_table("agreement"), price=2e-2), "q?",
        context=RunContext(client=ModelClient(model), verifier=_verifier))
    assert not any(r.logprobs for r in model.requests)


def test_a_forced_option_must_be_one_the_graph_can_run() -> None:
    with pytest.raises(ConfigError, match="cannot run option 'tree:2'"):
        compute_optimal(_table("agreement"), force="tree:2")


def _run_option(option: str) -> tuple[Any, list[ChatRequest]]:
    """A forced option after a failed probe, on a model that answers 2 when given earlier
    steps or a critique, and 1 otherwise."""
    def reply(messages: list[Message], request: ChatRequest) -> str:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        if request.role == "decomposer":
            return ('{"subtasks": [{"id": "1", "description": "first", "depends_on": []}, '
                    '{"id": "2", "description": "second", "depends_on": ["1"]}]}')
        return "Answer: 2" if "Earlier steps:" in text or "Feedback:" in text else "Answer: 1"

    model = FunctionModel(reply)
    table = _table("agreement")
    result = run(compute_optimal(table, force=option), "q?",
                 context=RunContext(client=ModelClient(model), verifier=_verifier))
    return result, model.requests


def test_decompose_runs_the_decomposition_and_answers_with_its_aggregate() -> None:
    result, requests = _run_option("decompose")
    assert [r.node for r in requests] == ["sample", "decompose", "subtask", "subtask",
                                          "aggregate"]
    assert result.state["answer"] == "2"  # the aggregate's, not the failed probe's
    assert result.state["plan"]["mode"] == "decompose"


def test_refine_revises_the_probe_against_the_verifier_until_accepted() -> None:
    result, requests = _run_option("refine:3")
    # The probe failed its check; one revision against that verdict passes it: stop there.
    assert [r.node for r in requests] == ["sample", "revise"]
    assert result.state["answer"] == "2"
    assert result.state["stop_reason"] == "accepted by the judge"


def test_a_rerun_replays_the_probe_with_its_logprob_and_chooses_the_same() -> None:
    from stratagem.budgets import TokenLedger

    ledger = TokenLedger()
    model = _model(-0.05)
    graph = compute_optimal(_table("logprob"), price=2e-2)
    first = run(graph, "q?", run_id="co1", context=RunContext(
        client=ModelClient(model, ledger=ledger), verifier=_verifier))
    sent = len(model.requests)
    again = run(graph, "q?", run_id="co1", context=RunContext(
        client=ModelClient(model, ledger=ledger), verifier=_verifier))
    assert len(model.requests) == sent  # every call replayed, none sent again
    assert again.state["plan"]["bin"] == first.state["plan"]["bin"] == "lp2/2"
    assert again.state["plan"]["probe_logprob"] == -0.05
