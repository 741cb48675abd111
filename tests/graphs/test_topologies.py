"""Every topology end to end on the in-process test doubles, with exact ledger accounting.

Where the call order is fixed (``single``, ``plan_solve``, ``refine``) the model is a
:class:`ScriptedModel`, so the number of calls is exact (too many or too few fails). Elsewhere
a role-aware :class:`FunctionModel` answers by reading which role's prompt it was sent.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from stratagem.agents import (
    DECOMPOSER_PROMPT,
    JUDGE_PAIRWISE_PROMPT,
    JUDGE_POINTWISE_PROMPT,
    PLANNER_PROMPT,
    SOLVER_PROMPT,
    ChatRequest,
    Message,
    ModelClient,
)
from stratagem.budgets import Budget, LedgerEntry, count_chat_tokens
from stratagem.graphs import (
    RunContext,
    RunResult,
    adaptive,
    best_of_n,
    decompose_solve,
    plan_solve,
    refine,
    run,
    single,
    tree,
)
from stratagem.testing import FunctionModel, ScriptedModel

TASK = "What is 6*7?"

Reply = Callable[[Sequence[Message], ChatRequest], str]


def role_of(messages: Sequence[Message]) -> str:
    """Which role sent this conversation, from its system prompt."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    prompts = {
        PLANNER_PROMPT.system: "planner",
        DECOMPOSER_PROMPT.system: "decomposer",
        SOLVER_PROMPT.system: "solver",
        JUDGE_POINTWISE_PROMPT.system: "judge",
        JUDGE_PAIRWISE_PROMPT.system: "pairwise",
    }
    return prompts.get(str(system), "unknown")


def user_text(messages: Sequence[Message]) -> str:
    return str(messages[-1]["content"])


def task_line(prompt: str) -> str:
    """The ``Task: ...`` line of a solver prompt (after any earlier-steps context)."""
    found = re.findall(r"^Task: (.*)$", prompt, flags=re.MULTILINE)
    return found[-1] if found else ""


def answer_in(text: str) -> int:
    """The number after the last ``Answer:`` in ``text``."""
    return int(re.findall(r"Answer: (-?\d+)", text)[-1])


def plan_json(mode: str, **fields: Any) -> str:
    return json.dumps({"mode": mode, "samples": 1, "rounds": 1, "difficulty": 0.5,
                       "budget_split": {}, "rationale": "because", **fields})


def roles_model(**replies: Reply | str) -> FunctionModel:
    """A FunctionModel answering each role with a fixed string or a function of the call."""

    def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        role = role_of(messages)
        reply = replies.get(role)
        if reply is None:
            raise AssertionError(f"unexpected call from role {role!r}")
        return reply if isinstance(reply, str) else reply(messages, request)

    return FunctionModel(respond)


def context(model: FunctionModel | ScriptedModel, **kw: Any) -> RunContext:
    budget = Budget(total=60_000, roles={"planner": 2_000, "decomposer": 2_000,
                                         "solver": 40_000, "judge": 16_000})
    return RunContext(client=ModelClient(model), budget=budget, **kw)


def rows(ctx: RunContext, result: RunResult) -> list[LedgerEntry]:
    return ctx.client.ledger.entries(run_id=result.run_id)


def shape(entries: Sequence[LedgerEntry]) -> list[tuple[str, str]]:
    return [(e.role, e.node) for e in entries]


async def all_in_flight(flight: dict[str, int], n: int, patience: float = 5.0) -> None:
    """Hold a call until ``n`` calls are in flight at once (or give up after ``patience``
    seconds, so a graph that runs them one superstep at a time fails instead of hanging)."""
    waited = 0.0
    while flight["peak"] < n and waited < patience:
        await asyncio.sleep(0.005)
        waited += 0.005


def check_accounting(ctx: RunContext, result: RunResult) -> list[LedgerEntry]:
    """Billed = sum of the run's rows; accepted = the rows the state marked as used."""
    entries = rows(ctx, result)
    assert entries, "the run made no recorded calls"
    assert len({e.call_id for e in entries}) == len(entries)
    assert all(e.run_id == result.run_id for e in entries)
    assert sum(e.total_tokens for e in entries) == result.billed.total_tokens
    assert len(entries) == result.billed.calls
    by_role: dict[str, int] = Counter()
    for e in entries:
        by_role[e.role] += e.total_tokens
    assert {k: v.total_tokens for k, v in result.by_role.items()} == dict(by_role)
    used = set(result.state.get("accepted_calls", []))
    assert used <= {e.call_id for e in entries}
    accepted_by_role: dict[str, int] = Counter()
    for e in entries:
        if e.call_id in used:
            accepted_by_role[e.role] += e.total_tokens
    assert result.accepted_tokens == dict(accepted_by_role)
    accepted_total = sum(result.accepted_tokens.values())
    assert accepted_total <= result.billed.total_tokens
    assert result.waste_tokens == result.billed.total_tokens - accepted_total
    if ctx.budget is not None:
        assert ctx.budget.spent() == result.billed.total_tokens
    return entries


# -- single, plan_solve ---------------------------------------------------------------------


def test_single_makes_one_solver_call() -> None:
    with ScriptedModel(["6 times 7.\nAnswer: 42"]) as model:
        ctx = context(model)
        result = run(single(), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("solver", "solve")]
    assert result.waste_tokens == 0
    assert TASK in user_text(model.requests[0].messages)


def test_plan_solve_gives_the_plan_to_the_solver() -> None:
    with ScriptedModel([plan_json("direct", rationale="multiply them"),
                        "Answer: 42"]) as model:
        ctx = context(model)
        result = run(plan_solve(), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("planner", "plan"), ("solver", "solve")]
    assert result.state["plan"]["rationale"] == "multiply them"
    assert "Plan: multiply them" in user_text(model.requests[1].messages)
    assert set(result.accepted_tokens) == {"planner", "solver"}


# -- decompose_solve ------------------------------------------------------------------------


def test_decompose_solve_runs_a_dependent_chain_in_order() -> None:
    subtasks = [
        {"id": "1", "description": "start with 6", "depends_on": []},
        {"id": "2", "description": "multiply the result by 7", "depends_on": ["1"]},
        {"id": "3", "description": "write the result in words", "depends_on": ["2"]},
    ]

    def solver(messages: Sequence[Message], request: ChatRequest) -> str:
        prompt = user_text(messages)
        step = task_line(prompt)
        if step == "start with 6":
            return "Answer: 6"
        if step == "multiply the result by 7":
            return "Answer: 42" if "Result: 6" in prompt else "Answer: missing step 1"
        if step == "write the result in words":
            return "Answer: forty-two" if "Result: 42" in prompt else "Answer: missing step 2"
        # The aggregation step: the original task, with every step's result.
        assert step == "What is 6*7 in words?"
        return "Answer: forty-two" if "Result: forty-two" in prompt else "Answer: ?"

    model = roles_model(decomposer=json.dumps({"subtasks": subtasks}), solver=solver)
    ctx = context(model)
    result = run(decompose_solve(), "What is 6*7 in words?", context=ctx)
    assert (result.answer, result.stop_reason) == ("forty-two", "done")
    assert result.state["results"] == {"1": "6", "2": "42", "3": "forty-two"}
    entries = check_accounting(ctx, result)
    assert [(e.role, e.node, e.branch) for e in entries] == [
        ("decomposer", "decompose", None),
        ("solver", "subtask", "1"),
        ("solver", "subtask", "2"),
        ("solver", "subtask", "3"),
        ("solver", "aggregate", None),
    ]
    # A chain: one subtask per superstep, so each ran as its own LangGraph task.
    assert len({e.task_id for e in entries}) == 5


def test_decompose_solve_fans_out_independent_subtasks_in_parallel() -> None:
    subtasks = [
        {"id": "a", "description": "compute 6*7", "depends_on": []},
        {"id": "b", "description": "compute 5*8", "depends_on": []},
        {"id": "c", "description": "compute 2*3", "depends_on": []},
    ]
    values = {"compute 6*7": 42, "compute 5*8": 40, "compute 2*3": 6}
    flight = {"now": 0, "peak": 0}

    async def solver(messages: Sequence[Message], request: ChatRequest) -> str:
        prompt = user_text(messages)
        step = task_line(prompt)
        if step in values:
            flight["now"] += 1
            flight["peak"] = max(flight["peak"], flight["now"])
            await all_in_flight(flight, 3)
            flight["now"] -= 1
            assert "Earlier steps" not in prompt  # independent: no context
            return f"Answer: {values[step]}"
        results = [int(x) for x in re.findall(r"^Result: (\d+)$", prompt, flags=re.MULTILINE)]
        return f"Answer: {sum(results)}"

    def respond(messages: Sequence[Message], request: ChatRequest) -> Any:
        role = role_of(messages)
        if role == "decomposer":
            return json.dumps({"subtasks": subtasks})
        assert role == "solver"
        return solver(messages, request)

    ctx = context(FunctionModel(respond))
    result = run(decompose_solve(), "Sum 6*7, 5*8 and 2*3.", context=ctx)
    assert (result.answer, result.stop_reason) == ("88", "done")
    assert flight["peak"] == 3  # the three subtasks ran in one superstep
    entries = check_accounting(ctx, result)
    assert shape(entries)[0] == ("decomposer", "decompose")
    assert sorted(e.branch or "" for e in entries if e.node == "subtask") == ["a", "b", "c"]
    assert shape(entries)[-1] == ("solver", "aggregate")
    assert len(entries) == 5


# -- best_of_n -------------------------------------------------------------------------------

SEED_ANSWERS = {0: 42, 1: 41, 2: 42, 3: 43}


def seeded_solver(messages: Sequence[Message], request: ChatRequest) -> str:
    assert request.seed is not None
    return f"Working.\nAnswer: {SEED_ANSWERS[request.seed % 4]}"


def test_best_of_n_vote_picks_the_majority_without_a_judge() -> None:
    model = roles_model(solver=seeded_solver)
    ctx = context(model)
    result = run(best_of_n(4, select="vote"), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("solver", "sample")] * 4
    assert sorted(e.branch or "" for e in entries) == ["0", "1", "2", "3"]
    assert sorted(r.seed or 0 for r in model.requests) == [0, 1, 2, 3]


def test_best_of_n_judge_picks_the_best_scored_even_in_the_minority() -> None:
    def judge(messages: Sequence[Message], request: ChatRequest) -> str:
        good = "Answer: 41" in user_text(messages)
        return f"Looks {'right' if good else 'off'}.\nSCORE: {0.95 if good else 0.3}\n" \
               f"VERDICT: {'accept' if good else 'reject'}"

    ctx = context(roles_model(solver=seeded_solver, judge=judge))
    result = run(best_of_n(4, select="judge"), TASK, context=ctx)
    assert (result.answer, result.stop_reason, result.score) == ("41", "done", 0.95)
    entries = check_accounting(ctx, result)
    assert Counter(shape(entries)) == {("solver", "sample"): 4, ("judge", "judge"): 4}
    assert sorted(e.branch or "" for e in entries if e.role == "judge") == ["0", "1", "2", "3"]
    assert result.waste_tokens == 0


def test_best_of_n_knockout_plays_n_minus_one_matches() -> None:
    def pairwise(messages: Sequence[Message], request: ChatRequest) -> str:
        prompt = user_text(messages)
        a = prompt.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        b = prompt.split("Answer B:\n", 1)[1].split("\n\nWhich answer", 1)[0]
        return f"The larger wins.\nWINNER: {'A' if answer_in(a) >= answer_in(b) else 'B'}"

    ctx = context(roles_model(solver=seeded_solver, pairwise=pairwise))
    result = run(best_of_n(4, select="knockout"), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("43", "done")  # a minority answer won
    entries = check_accounting(ctx, result)
    assert Counter(e.role for e in entries) == {"solver": 4, "judge": 3}
    assert [e.branch for e in entries if e.role == "judge"] == [
        "ko-r1-m1", "ko-r1-m2", "ko-r2-m1"]
    assert "knockout: 3 matches, winner 3" in result.notes


def test_best_of_n_verifier_selection_makes_no_judge_calls() -> None:
    ctx = context(roles_model(solver=seeded_solver),
                  verifier=lambda text: "Answer: 43" in text)
    result = run(best_of_n(4, select="verifier"), TASK, context=ctx)
    assert (result.answer, result.stop_reason, result.score) == ("43", "done", 1.0)
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("solver", "sample")] * 4
    assert [v["by"] for v in result.state["verdicts"]] == ["verifier"] * 4


# -- refine ----------------------------------------------------------------------------------


def test_refine_accepts_on_round_two_after_a_reject() -> None:
    script = ["First try.\nAnswer: 40",
              "Off by two.\nSCORE: 0.2\nVERDICT: reject",
              "Fixed.\nAnswer: 42",
              "Correct.\nSCORE: 0.9\nVERDICT: accept"]
    with ScriptedModel(script) as model:
        ctx = context(model)
        result = run(refine(max_rounds=3), TASK, context=ctx)
    assert (result.answer, result.score) == ("42", 0.9)
    assert result.stop_reason == "accepted by the judge"
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("solver", "solve"), ("judge", "judge"),
                              ("solver", "revise"), ("judge", "judge")]
    revision = user_text(model.requests[2].messages)
    assert "Your previous answer:\nFirst try.\nAnswer: 40" in revision
    assert "Feedback:\nOff by two" in revision
    assert result.state["round"] == 2


def test_refine_stops_after_max_rounds_with_the_best_scored_answer() -> None:
    script = ["Answer: 40", "Wrong.\nSCORE: 0.2\nVERDICT: reject",
              "Answer: 41", "Closer.\nSCORE: 0.4\nVERDICT: reject"]
    with ScriptedModel(script) as model:
        ctx = context(model)
        result = run(refine(max_rounds=2), TASK, context=ctx)
    assert (result.answer, result.score, result.stop_reason) == ("41", 0.4, "2 rounds done")
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("solver", "solve"), ("judge", "judge"),
                              ("solver", "revise"), ("judge", "judge")]


# -- tree ------------------------------------------------------------------------------------


def climbing_solver(messages: Sequence[Message], request: ChatRequest) -> str:
    """Root samples answer 10 or 20 by seed; a revision answers its parent's answer + 1."""
    prompt = user_text(messages)
    if "Your previous answer:" in prompt:
        assert "Feedback:\nscored" in prompt  # the parent's critique came along
        return f"Revised.\nAnswer: {answer_in(prompt) + 1}"
    return f"Answer: {10 if (request.seed or 0) % 2 == 0 else 20}"


def value_judge(messages: Sequence[Message], request: ChatRequest) -> str:
    value = answer_in(user_text(messages))
    return f"scored by value\nSCORE: {value / 100}\nVERDICT: reject"


def test_tree_beam_keeps_the_best_and_revises_it() -> None:
    ctx = context(roles_model(solver=climbing_solver, judge=value_judge))
    result = run(tree(mode="beam", branching=2, width=1, depth=2), TASK, context=ctx)
    assert (result.answer, result.stop_reason, result.score) == ("22", "done", 0.22)
    parents = [c.get("parent") for c in result.state["candidates"]]
    assert parents == [None, None, 1, 1, 2, 2]  # the better root, then the best revision
    entries = check_accounting(ctx, result)
    assert Counter(shape(entries)) == {("solver", "sample"): 6, ("judge", "judge"): 6}


def test_tree_mcts_expands_by_ucb_one_node_per_iteration() -> None:
    ctx = context(roles_model(solver=climbing_solver, judge=value_judge))
    result = run(tree(mode="mcts", branching=2, iterations=3), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("23", "done")
    # UCB1 with c=1 on scores 0.1/0.2/...: the deepest, best-valued node each time.
    assert [c.get("parent") for c in result.state["candidates"]] == [None, None, 1, 2, 3]
    entries = check_accounting(ctx, result)
    assert Counter(shape(entries)) == {("solver", "sample"): 5, ("judge", "judge"): 5}


# -- adaptive --------------------------------------------------------------------------------

ACCEPT = "Fine.\nSCORE: 0.9\nVERDICT: accept"
REJECT = "Not sure.\nSCORE: 0.3\nVERDICT: reject"


def test_adaptive_direct() -> None:
    ctx = context(roles_model(planner=plan_json("direct", budget_split={"solver": 1.0}),
                              solver="Answer: 42"))
    result = run(adaptive(), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("planner", "plan"), ("solver", "solve")]
    assert result.state["plan"]["mode"] == "direct"


def test_adaptive_decompose() -> None:
    subtasks = [{"id": "1", "description": "six times seven", "depends_on": []},
                {"id": "2", "description": "check it", "depends_on": ["1"]}]
    ctx = context(roles_model(
        planner=plan_json("decompose", budget_split={"decomposer": 0.2, "solver": 0.8}),
        decomposer=json.dumps({"subtasks": subtasks}), solver="Answer: 42"))
    result = run(adaptive(), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    entries = check_accounting(ctx, result)
    assert [(e.role, e.node, e.branch) for e in entries] == [
        ("planner", "plan", None), ("decomposer", "decompose", None),
        ("solver", "subtask", "1"), ("solver", "subtask", "2"),
        ("solver", "aggregate", None)]


def test_adaptive_parallel() -> None:
    ctx = context(roles_model(
        planner=plan_json("parallel", samples=3, budget_split={"solver": 0.7, "judge": 0.3}),
        solver=seeded_solver, judge=ACCEPT))
    result = run(adaptive(), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    entries = check_accounting(ctx, result)
    assert shape(entries)[0] == ("planner", "plan")
    assert Counter(shape(entries)[1:]) == {("solver", "sample"): 3, ("judge", "judge"): 3}


def test_adaptive_sequential() -> None:
    def solver(messages: Sequence[Message], request: ChatRequest) -> str:
        return "Answer: 42" if "Your previous answer" in user_text(messages) else "Answer: 40"

    ctx = context(roles_model(
        planner=plan_json("sequential", rounds=2, budget_split={"solver": 0.6, "judge": 0.4}),
        solver=solver, judge=REJECT))
    result = run(adaptive(), TASK, context=ctx)
    assert result.stop_reason == "done"
    assert result.answer == "40"  # equal scores: the earliest revision wins
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("planner", "plan"), ("solver", "solve"), ("judge", "judge"),
                              ("solver", "revise"), ("judge", "judge")]


def test_adaptive_unparseable_plan_falls_back_to_direct() -> None:
    ctx = context(roles_model(planner="Hmm, just solve it I guess.", solver="Answer: 42"))
    result = run(adaptive(), TASK, context=ctx)
    assert (result.answer, result.stop_reason) == ("42", "done")
    assert result.state["plan"]["mode"] == "direct"
    assert any(n.startswith("planner skipped (output unusable") for n in result.notes)
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("planner", "plan"), ("planner", "plan"), ("solver", "solve")]
    assert entries[1].labels.get("repair") == "1"
    # Both planner replies were billed and neither was used.
    assert "planner" not in result.accepted_tokens
    assert result.waste_tokens == result.by_role["planner"].total_tokens > 0
    # The planner's unspent budget goes to the solver, recorded with the reason.
    (moved,) = result.transfers
    assert (moved.from_role, moved.to_role) == ("planner", "solver")
    assert moved.tokens == 2_000 - result.by_role["planner"].total_tokens
    assert moved.reason.startswith("planner skipped: output unusable")



# -- a 64-way fan-out --------------------------------------------------------------------------


def test_best_of_64_runs_in_one_superstep_within_each_branch_allowance() -> None:
    n, allowance = 64, 150
    flight = {"now": 0, "peak": 0}

    async def respond(messages: Sequence[Message], request: ChatRequest) -> str:
        flight["now"] += 1
        flight["peak"] = max(flight["peak"], flight["now"])
        await all_in_flight(flight, n)
        flight["now"] -= 1
        return f"Answer: {42 if (request.seed or 0) % 3 else 41}"

    model = FunctionModel(respond)
    budget = Budget(total=100_000, roles={"solver": n * allowance, "judge": 1_000})
    ctx = RunContext(client=ModelClient(model), budget=budget)
    result = run(best_of_n(n, select="vote"), TASK, context=ctx)

    assert (result.answer, result.stop_reason) == ("42", "done")
    assert flight["peak"] == n  # every branch was in flight at once: one superstep
    entries = check_accounting(ctx, result)
    assert shape(entries) == [("solver", "sample")] * n
    assert sorted(int(e.branch or -1) for e in entries) == list(range(n))
    assert len({e.task_id for e in entries}) == n  # one LangGraph task per branch
    assert sorted(r.seed or 0 for r in model.requests) == list(range(n))
    for request in model.requests:
        # What each branch reserved (the client's input estimate + the output cap it sent)
        # fits its allowance, and the allowance is what bounded it (the solver asks for 512).
        estimate = int(count_chat_tokens(request.messages, request.model)
                       * (1 + ctx.client.input_margin)) + 1
        assert estimate + request.max_output <= allowance
        assert request.max_output < 512
    assert all(e.total_tokens <= allowance for e in entries)
    assert budget.spent("solver") <= n * allowance


# -- determinism -------------------------------------------------------------------------------


async def deterministic(messages: Sequence[Message], request: ChatRequest) -> str:
    """Replies depend only on the prompt and the seed; later seeds finish first."""
    role = role_of(messages)
    if role == "solver":
        seed = request.seed or 0
        await asyncio.sleep(0.002 * (8 - seed % 8))
        base = answer_in(user_text(messages)) if "previous answer" in user_text(messages) \
            else 40
        return f"Answer: {base + (seed * 7) % 5}"
    assert role == "judge"
    value = answer_in(user_text(messages))
    return f"scored\nSCORE: {((value * 37) % 10) / 10}\nVERDICT: reject"


def fingerprint(ctx: RunContext, result: RunResult) -> tuple[Any, ...]:
    entries = check_accounting(ctx, result)
    calls = sorted((e.role, e.node, e.branch or "", e.prompt_tokens, e.completion_tokens)
                   for e in entries)
    return (result.answer, result.score, result.stop_reason, result.state["candidates"],
            result.state["verdicts"], result.billed.total_tokens,
            {k: v.total_tokens for k, v in result.by_role.items()}, calls)


def test_same_seed_same_result_best_of_n() -> None:
    prints = []
    for concurrency in (None, None, 2):
        ctx = context(FunctionModel(deterministic), seed=7)
        result = run(best_of_n(6, select="judge"), TASK, context=ctx,
                     max_concurrency=concurrency)
        prints.append(fingerprint(ctx, result))
    assert prints[0] == prints[1] == prints[2]
    # The seed is what makes it reproducible: another seed samples other candidates.
    other = context(FunctionModel(deterministic), seed=8)
    different = fingerprint(other, run(best_of_n(6, select="judge"), TASK, context=other))
    assert different[3] != prints[0][3]


def test_same_seed_same_result_tree_mcts() -> None:
    prints = []
    for _ in range(2):
        ctx = context(FunctionModel(deterministic), seed=3)
        result = run(tree(mode="mcts", branching=3, iterations=4), TASK, context=ctx)
        prints.append(fingerprint(ctx, result))
    assert prints[0] == prints[1]
    assert len(prints[0][3]) == 7  # 3 root samples + 4 expansions
