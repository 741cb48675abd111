"""The four roles end to end through ModelClient and the scripted test doubles."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from stratagem.agents import (
    SOLVER_PROMPT,
    ChatRequest,
    Decomposer,
    Decomposition,
    Judge,
    LLMDecomposer,
    LLMJudge,
    LLMPlanner,
    LLMSolver,
    Message,
    ModelClient,
    Plan,
    Planner,
    PromptTemplate,
    Solver,
    VerifierJudge,
    extract_answer,
    knockout,
    parse_pairwise,
    parse_verdict,
)
from stratagem.errors import ConfigError, OutputParseError
from stratagem.testing import FunctionModel, ScriptedModel

TASK = "What is 12 + 30?"


def test_default_roles_satisfy_their_protocols() -> None:
    assert isinstance(LLMPlanner(), Planner)
    assert isinstance(LLMDecomposer(), Decomposer)
    assert isinstance(LLMSolver(), Solver)
    assert isinstance(LLMJudge(), Judge)
    assert isinstance(VerifierJudge(bool), Judge)


# -- planner ---------------------------------------------------------------------------------

PLAN_REPLY = """Let me think. This needs several tries.
```json
{"mode": "Parallel", "samples": 8, "difficulty": 0.7,
 "budget_split": {"solver": 3, "judge": 1, "critic": 4}, "rationale": "hard"}
```
That is my plan."""


def test_planner_reads_json_in_a_code_fence_with_prose() -> None:
    with ScriptedModel([PLAN_REPLY]) as model:
        client = ModelClient(model)
        plan = asyncio.run(LLMPlanner().plan(client, TASK, roles_available=("solver", "judge"),
                                             budget_tokens=2000))
    assert plan.mode == "parallel" and plan.samples == 8 and plan.rounds == 1
    assert plan.budget_split == {"solver": 0.75, "judge": 0.25}  # "critic" is not available
    assert TASK in model.requests[0].messages[-1]["content"]
    assert "2000 tokens" in model.requests[0].messages[-1]["content"]
    (row,) = client.ledger.entries()
    assert (row.role, row.node) == ("planner", "planner")


def test_planner_repair_is_charged() -> None:
    with ScriptedModel(['{"mode": "guess"}', '{"mode": "direct"}']) as model:
        client = ModelClient(model)
        plan = asyncio.run(LLMPlanner().plan(client, TASK))
    assert plan.mode == "direct"
    assert set(plan.budget_split) == {"planner", "decomposer", "solver", "judge"}
    rows = client.ledger.entries(role="planner")
    assert len(rows) == 2 and all(r.total_tokens > 0 for r in rows)
    assert plan.call_ids == (rows[1].call_id,)  # only the repaired reply is accepted


def test_planner_gives_up_after_one_repair() -> None:
    with ScriptedModel(["direct, I guess", "really, direct"]) as model:
        client = ModelClient(model)
        with pytest.raises(OutputParseError, match="planner"):
            asyncio.run(LLMPlanner().plan(client, TASK))
    assert len(client.ledger) == 2
    assert client.ledger.totals().total_tokens > 0


def test_plan_validation() -> None:
    assert Plan.model_validate({"mode": "refinement"}).mode == "sequential"
    assert Plan(budget_split={"solver": 0, "judge": 2}).budget_split == {"solver": 0, "judge": 1}
    for bad in ({"samples": 0}, {"rounds": 17}, {"difficulty": 1.5},
                {"budget_split": {"solver": -1}}, {"budget_split": {"solver": 0}}):
        with pytest.raises(ValidationError):
            Plan.model_validate(bad)


# -- decomposer ------------------------------------------------------------------------------

def _decomposition(*steps: tuple[str, list[str]]) -> Decomposition:
    return Decomposition.model_validate(
        {"subtasks": [{"id": i, "description": f"step {i}", "depends_on": d} for i, d in steps]}
    )


def test_decomposer_end_to_end() -> None:
    reply = ('{"subtasks": [{"id": 1, "description": "add the tens"}, '
             '{"id": 2, "description": "add the units", "depends_on": null}, '
             '{"id": 3, "description": "combine", "depends_on": [1, 2]}]}')
    with ScriptedModel([reply]) as model:
        client = ModelClient(model)
        plan = asyncio.run(LLMDecomposer(max_subtasks=3).decompose(client, TASK))
    assert [s.id for s in plan.order()] == ["1", "2", "3"]
    assert plan.get("3").depends_on == ["1", "2"]
    assert not plan.independent()
    assert [s.id for s in plan.ready([])] == ["1", "2"]
    assert [s.id for s in plan.ready(["1", "2"])] == ["3"]
    assert "at most 3 steps" in model.requests[0].messages[-1]["content"]
    assert client.ledger.entries()[0].role == "decomposer"


def test_order_puts_dependencies_first() -> None:
    plan = _decomposition(("c", ["b"]), ("a", []), ("b", ["a"]), ("d", []))
    assert [s.id for s in plan.order()] == ["a", "b", "c", "d"]
    assert _decomposition(("x", []), ("y", [])).independent()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((("a", ["b"]), ("b", ["a"])), "cycle"),
        ((("a", ["a"]),), "cycle"),
        ((("a", []), ("b", ["z"])), "unknown"),
        ((("a", []), ("a", [])), "unique"),
    ],
)
def test_invalid_decompositions_are_rejected(
    steps: tuple[tuple[str, list[str]], ...], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _decomposition(*steps)


def test_too_many_subtasks_get_a_repair() -> None:
    many = '{"subtasks": [' + ", ".join(
        f'{{"id": "{i}", "description": "s"}}' for i in range(5)) + "]}"
    with ScriptedModel([many, '{"subtasks": [{"id": "1", "description": "all"}]}']) as model:
        client = ModelClient(model)
        plan = asyncio.run(LLMDecomposer(max_subtasks=2).decompose(client, TASK))
    assert len(plan.subtasks) == 1
    assert "at most 2 allowed" in model.requests[1].messages[-1]["content"]


# -- solver ----------------------------------------------------------------------------------

def test_solver_sends_prior_steps_previous_answer_and_feedback() -> None:
    with ScriptedModel(["12 + 30 = 42.\nAnswer: 42"]) as model:
        client = ModelClient(model)
        solution = asyncio.run(LLMSolver().solve(
            client, TASK, prior_steps=[("add the tens", "40"), ("add the units", "2")],
            previous="Answer: 41", feedback="Check the units.", branch="s1",
            temperature=0.7, seed=3,
        ))
    assert solution.answer == "42"
    assert solution.text.startswith("12 + 30")
    request = model.requests[0]
    prompt = request.messages[-1]["content"]
    for part in ("Step 1: add the tens\nResult: 40", "Step 2: add the units\nResult: 2",
                 "Answer: 41", "Check the units.", TASK):
        assert part in prompt
    assert (request.temperature, request.seed) == (0.7, 3)
    (row,) = client.ledger.entries()
    assert (row.role, row.node, row.branch) == ("solver", "solver", "s1")
    assert solution.call_ids == (row.call_id,)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Let me add.\nAnswer: 42", "42"),
        ("answer = 7\nso the final answer: 8.", "8"),
        ("**Answer:** `cat`", "cat"),
        ("Answer: 3.14", "3.14"),
        ("We get\n\n  17  \n\n", "17"),
        ("", ""),
        ("ANSWER:   yes  ", "yes"),
        ("**Answer:**\n42\n", "42"),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


def test_custom_template_changes_the_prompt() -> None:
    custom = PromptTemplate(system="", user="Q: {task}\nPrior: {prior_steps}\nA:")
    with ScriptedModel(["42"]) as model:
        asyncio.run(LLMSolver(custom).solve(ModelClient(model), TASK, prior_steps=[("s", "r")]))
    assert model.requests[0].messages == [
        {"role": "user", "content": f"Q: {TASK}\nPrior: Step 1: s\nResult: r\nA:"}
    ]


def test_solver_shows_examples_as_earlier_turns_of_the_same_template() -> None:
    shots = [("Name a fruit.", "Answer: apple"), ("2 + 2?", "Answer: 4")]
    with ScriptedModel(["Answer: 42", "Answer: 43"]) as model:
        client = ModelClient(model)
        solver = LLMSolver(examples=shots)
        asyncio.run(solver.solve(client, TASK, feedback="Try again."))
        asyncio.run(solver.solve(client, TASK))
    messages = model.requests[0].messages
    expected_user = SOLVER_PROMPT.render(task="Name a fruit.", context="")[1]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user",
                                             "assistant", "user"]
    assert messages[0]["content"] == SOLVER_PROMPT.system
    assert messages[1]["content"] == expected_user
    assert [messages[2]["content"], messages[4]["content"]] == ["Answer: apple", "Answer: 4"]
    assert "Feedback:" not in messages[3]["content"]  # examples carry no context
    assert TASK in messages[5]["content"] and "Try again." in messages[5]["content"]
    # Prompt tokens of every call include the examples; the second call sends the same turns.
    assert model.requests[1].messages[:5] == messages[:5]
    first, second = client.ledger.entries()
    assert first.prompt_tokens > second.prompt_tokens > 0  # the feedback is longer

    custom = PromptTemplate(system="", user="Q: {task}")
    with ScriptedModel(["42"]) as model:
        asyncio.run(LLMSolver(custom, examples=[("1+1", "2")]).solve(ModelClient(model), "3"))
    assert model.requests[0].messages == [
        {"role": "user", "content": "Q: 1+1"}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Q: 3"},
    ]


def test_template_with_a_field_the_role_lacks_raises_config_error() -> None:
    bad = PromptTemplate(system="{persona}", user="{task} {hint}")
    with pytest.raises(ConfigError, match="'hint', 'persona'"):
        bad.render(task="t")
    with ScriptedModel([]) as model, pytest.raises(ConfigError, match="'hint'"):
        asyncio.run(LLMSolver(bad).solve(ModelClient(model), TASK))
    with pytest.raises(ConfigError):
        PromptTemplate(system="", user="{} and {0}").render(task="t")
    assert SOLVER_PROMPT.render(task="t", context="")[0]["role"] == "system"


# -- judge -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "score", "verdict", "rationale"),
    [
        ("It adds up.\nSCORE: 0.9\nVERDICT: accept", 0.9, "accept", "It adds up."),
        ("Close.\nSCORE: 0.3", 0.3, "reject", "Close."),  # verdict from the threshold
        ("Good.\n**Score:** 85%", 0.85, "accept", "Good."),
        ("Fine.\nScore: 7/10", 0.7, "accept", "Fine."),
        ("Fine.\nscore = 4 out of 10\nverdict: Rejected", 0.4, "reject", "Fine."),
        ("SCORE: 0.1\nthen again...\nSCORE: 1.7\nVERDICT: pass", 0.17, "accept",
         "SCORE: 0.1\nthen again..."),
        ("Wrong.\nVERDICT: reject", 0.0, "reject", "Wrong."),
        ("SCORE: 250", 1.0, "accept", ""),
    ],
)
def test_parse_verdict_variants(text: str, score: float, verdict: str, rationale: str) -> None:
    parsed = parse_verdict(text)
    assert parsed.score == pytest.approx(score)
    assert (parsed.verdict, parsed.rationale) == (verdict, rationale)


def test_parse_verdict_needs_a_score_or_verdict() -> None:
    with pytest.raises(ValueError, match="SCORE"):
        parse_verdict("It looks fine to me.")
    assert parse_verdict("SCORE: 0.6", threshold=0.7).verdict == "reject"


def test_parse_pairwise() -> None:
    assert parse_pairwise("B forgot a carry.\nWINNER: A").model_dump() == {
        "winner": "A", "rationale": "B forgot a carry."}
    assert parse_pairwise("winner: b\n...no, **Winner:** answer B").winner == "B"
    with pytest.raises(ValueError, match="WINNER"):
        parse_pairwise("Both are fine.")


def test_llm_judge_scores_and_compares() -> None:
    script = ["Hmm.", "42 is right.\nSCORE: 9/10", "A is wrong.\nWINNER: B"]
    with ScriptedModel(script) as model:
        client = ModelClient(model)
        judge = LLMJudge(threshold=0.8)
        verdict = asyncio.run(judge.score(client, TASK, "42", branch="j1"))
        pair = asyncio.run(judge.compare(client, TASK, "41", "42"))
    assert (verdict.score, verdict.verdict, verdict.rationale) == (0.9, "accept", "42 is right.")
    assert pair.winner == "B"
    assert "Proposed answer:\n42" in model.requests[0].messages[-1]["content"]
    assert "SCORE: <number from 0 to 1>" in model.requests[1].messages[-1]["content"]
    assert "Answer A:\n41" in model.requests[2].messages[-1]["content"]
    assert [r.role for r in client.ledger] == ["judge"] * 3


def test_verifier_judge_makes_no_calls() -> None:
    async def async_checker(candidate: str) -> float:
        return 0.25 if candidate == "close" else 0.0

    with ScriptedModel([]) as model:
        client = ModelClient(model)
        judge = VerifierJudge(lambda c: c == "42")
        right = asyncio.run(judge.score(client, TASK, "42"))
        wrong = asyncio.run(judge.score(client, TASK, "41"))
        tie = asyncio.run(judge.compare(client, TASK, "1", "2"))
        graded = asyncio.run(VerifierJudge(async_checker, threshold=0.2).score(
            client, TASK, "close"))
    assert (right.score, right.verdict) == (1.0, "accept")
    assert (wrong.score, wrong.verdict) == (0.0, "reject")
    assert tie.winner == "A"
    assert (graded.score, graded.verdict) == (0.25, "accept")
    assert len(client.ledger) == 0


def test_knockout_with_a_verifier_plays_n_minus_one_matches() -> None:
    candidates = ["3", "9", "4", "1", "7"]
    with ScriptedModel([]) as model:
        client = ModelClient(model)
        result = asyncio.run(knockout(VerifierJudge(lambda c: int(c) / 10), client, TASK,
                                      candidates))
    assert (result.winner_index, result.winner_text) == (1, "9")
    assert result.matches == ((0, 1, 1), (2, 3, 2), (1, 2, 1), (1, 4, 1))
    assert result.rounds == 3
    assert len(client.ledger) == 0
    assert result.call_ids == ()


def test_knockout_with_an_llm_judge() -> None:
    def bigger(messages: Sequence[Message], request: ChatRequest) -> str:
        a, b = (int(n) for n in re.findall(r"Answer [AB]:\n(\d+)", messages[-1]["content"]))
        return f"Comparing {a} and {b}.\nWINNER: {'A' if a >= b else 'B'}"

    model = FunctionModel(bigger)
    client = ModelClient(model)
    result = asyncio.run(knockout(LLMJudge(), client, TASK, ["5", "2", "8", "6", "1"],
                                  branch="bo5"))
    assert result.winner_text == "8"
    assert len(result.matches) == 4 == len(model.requests) == len(client.ledger)
    assert {r.branch for r in client.ledger} == {
        "bo5/ko-r1-m1", "bo5/ko-r1-m2", "bo5/ko-r2-m1", "bo5/ko-r3-m1"}
    assert result.verdicts[0].rationale == "Comparing 5 and 2."
    assert sorted(result.call_ids) == sorted(r.call_id for r in client.ledger)


def test_knockout_edge_cases() -> None:
    client = ModelClient(ScriptedModel([]))
    single = asyncio.run(knockout(VerifierJudge(bool), client, TASK, ["only"]))
    assert (single.winner_index, single.matches, single.rounds) == (0, (), 0)
    with pytest.raises(ValueError, match="at least one"):
        asyncio.run(knockout(VerifierJudge(bool), client, TASK, []))
