"""The ``adaptive_consistency`` topology: it stops once the majority is clear, draws up to its
cap when answers disagree, and its first samples are best-of-N's (same branch seeds)."""

from __future__ import annotations

from collections.abc import Sequence

from stratagem.agents import ChatRequest, Message, ModelClient
from stratagem.budgets import Budget
from stratagem.graphs import RunContext, adaptive_consistency, best_of_n, run
from stratagem.testing import FunctionModel


def _by_seed(answers: dict[int, str]) -> FunctionModel:
    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        assert request.seed is not None
        return f"Answer: {answers.get(request.seed, 'x' + str(request.seed))}"

    return FunctionModel(respond)


def _run(model: FunctionModel, graph: object, total: int = 50_000) -> tuple[RunContext, object]:
    ctx = RunContext(client=ModelClient(model), budget=Budget(total=total,
                                                              roles={"solver": total}))
    return ctx, run(graph, "Pick a number.", context=ctx)  # type: ignore[arg-type]


def test_agreeing_samples_stop_it_early() -> None:
    model = _by_seed({s: "7" for s in range(20)})
    _, result = _run(model, adaptive_consistency(16, threshold=0.95))
    assert len(model.requests) == 4              # 4 of 4 agree: P = 0.969 >= 0.95
    assert result.answer == "7"                  # type: ignore[attr-defined]
    assert result.stop_reason.startswith("adaptive consistency: P(majority) 0.969")  # type: ignore[attr-defined]


def test_disagreeing_samples_go_on_to_the_cap_and_the_majority_wins() -> None:
    model = _by_seed({0: "3", 1: "5", 2: "3", 3: "9", 4: "5", 5: "3"})
    _, result = _run(model, adaptive_consistency(6, threshold=0.95, batch=2))
    assert len(model.requests) == 6
    assert result.answer == "3"                  # type: ignore[attr-defined]
    assert "max_samples" in result.stop_reason   # type: ignore[attr-defined]


def test_its_samples_are_the_first_samples_of_best_of_n() -> None:
    answers = {0: "1", 1: "1", 2: "1", 3: "1", 4: "2", 5: "3"}
    ac, bo = _by_seed(answers), _by_seed(answers)
    _run(ac, adaptive_consistency(6))
    _run(bo, best_of_n(6, select="vote"))
    ac_seeds = [r.seed for r in ac.requests]
    assert ac_seeds == [0, 1, 2, 3]
    assert set(ac_seeds) <= {r.seed for r in bo.requests}
    assert {r.temperature for r in ac.requests} == {r.temperature for r in bo.requests}


def test_a_budget_that_fits_no_further_sample_ends_it_with_what_it_has() -> None:
    model = _by_seed({})                         # every sample a different answer
    _, result = _run(model, adaptive_consistency(16), total=300)
    assert 1 <= len(model.requests) < 16
    assert result.stop_reason.startswith("budget exhausted")  # type: ignore[attr-defined]
    assert result.answer                          # type: ignore[attr-defined]
