"""The simulated backend: a seeded latent-skill model behind the same client interface.

Every call is answered by role. A solver call is correct with probability

    sigmoid(skill - difficulty_weight * (difficulty - 0.5)
            + token_weight * log2(output cap / 256)
            + plan_bonus [a plan was given] + decompose_bonus [earlier steps were given]
            + feedback_bonus [a critique of a previous answer was given])

so success depends on the tokens a call may spend, on the coordination structure around it and
on the task's difficulty, with effects the user sets (:class:`SimEffects`). The judge is right
with probability ``judge_accuracy``; the planner picks a mode from the difficulty; the
decomposer splits the task into a short chain. Draws are seeded by the request (its seed and
content), so the same run gives the same result. Rows it produces are labelled ``simulated``
(backend and model names), and reports say so.

A request that asks for ``logprobs`` gets a planted mean token log-probability: for a solver
call ``-(logprob_base + logprob_weight * (1 - p)) + logprob_noise * z``, ``p`` the call's
planted probability of being correct and ``z`` a standard normal drawn from its own seeded
stream (so asking for log-probabilities changes no answer). The harder the task, the lower the
value: the difficulty signal a probe can read. Other roles get ``-logprob_base`` plus noise
(values are capped at 0).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from stratagem.agents import BackendCapabilities, ChatRequest, ChatResponse, extract_answer
from stratagem.budgets import Usage, count_chat_tokens

__all__ = ["SimEffects", "SimTask", "SimulatedModel", "sim_tasks"]

_CAPS = BackendCapabilities("simulated", "max_tokens", True, True, True, 256,
                            bills_lost_replies=False)


class SimEffects(BaseModel):
    """The effects planted in the simulated model (logit scale unless said otherwise).

    The one definition of the simulation settings: an ablation config's ``[simulation]``
    table is validated as this model, defaults included.

    Attributes:
        skill: Success logit of a plain solver call at difficulty 0.5 and a 256-token cap.
        difficulty_weight: Logit lost per unit of difficulty above 0.5.
        token_weight: Logit gained per doubling of a call's output cap.
        plan_bonus: Logit gained when the solver is given a plan.
        decompose_bonus: Logit gained when the solver is given earlier steps' results.
        feedback_bonus: Logit gained when revising against a critique.
        judge_accuracy: Probability the judge's verdict matches the truth.
        outcome_judge_accuracy: The same for the outcome-only judge (a score, no reasoning
            first: ``best_of_n`` with ``judge = "outcome"``); unset, ``judge_accuracy``.
        answer_tokens: Typical completion length of a solver call (tokens).
        judge_tokens: Typical completion length of a judge call.
        logprob_base: Minus the mean token log-probability of a sure answer.
        logprob_weight: Mean token log-probability lost per unit of the call's planted
            probability of being wrong (0: no signal in the log-probabilities).
        logprob_noise: Standard deviation of the noise on a call's mean log-probability.
    """

    # Strict, as the config's ``[simulation]`` table it validates: "0.5" is refused, not read.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    skill: float = 0.0
    difficulty_weight: float = 3.0
    token_weight: float = 0.4
    plan_bonus: float = 0.3
    decompose_bonus: float = 0.5
    feedback_bonus: float = 0.4
    judge_accuracy: float = Field(default=0.85, ge=0, le=1)
    outcome_judge_accuracy: float | None = Field(default=None, ge=0, le=1)
    answer_tokens: int = Field(default=96, ge=1)
    judge_tokens: int = Field(default=48, ge=1)
    logprob_base: float = Field(default=0.2, ge=0)
    logprob_weight: float = Field(default=1.5, ge=0)
    logprob_noise: float = Field(default=0.15, ge=0)


@dataclass(frozen=True, slots=True)
class SimTask:
    """What the simulator knows about a task: its question, gold answer and difficulty."""

    question: str
    answer: str
    difficulty: float = 0.5


_OUTCOME_ONLY = "Do not explain."
"""In the outcome-only judge's prompt (``JUDGE_OUTCOME_PROMPT``), never in the reasoning one's."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _norm(text: str) -> str:
    return re.sub(r"[\s\.\,\!\?\"']+", " ", text.casefold()).strip()


class SimulatedModel:
    """A :class:`~stratagem.agents.ChatBackend` that simulates a model of known skill.

    Args:
        tasks: The tasks it may be asked about (it finds the task in the prompt).
        effects: The planted effects.
        seed: Mixed into every draw.
    """

    def __init__(self, tasks: Iterable[SimTask], effects: SimEffects | None = None,
                 *, seed: int = 0) -> None:
        """Create a simulator over ``tasks``."""
        self._tasks = sorted(tasks, key=lambda t: -len(t.question))
        self.effects = effects or SimEffects()
        self._seed = seed

    @property
    def name(self) -> str:
        """Backend kind written in ledger rows: ``simulated``."""
        return "simulated"

    @property
    def model(self) -> str:
        """Model name written in ledger rows: ``simulated``."""
        return "simulated"

    @property
    def endpoint(self) -> str:
        """A per-instance endpoint key."""
        return f"simulated://{id(self):x}"

    @property
    def capabilities(self) -> BackendCapabilities:
        """Reports everything; honours ``max_tokens``."""
        return _CAPS

    async def aclose(self) -> None:
        """Nothing to release."""

    def _find(self, text: str) -> SimTask | None:
        for task in self._tasks:
            if task.question and task.question in text:
                return task
        return None

    def _rng(self, request: ChatRequest, salt: str) -> random.Random:
        digest = hashlib.sha256()
        digest.update(f"{self._seed}|{request.seed}|{request.role}|{request.node}|{salt}".encode())
        for m in request.messages:
            digest.update(str(m.get("content", "")).encode())
        return random.Random(int.from_bytes(digest.digest()[:8], "big"))

    async def send(self, request: ChatRequest) -> ChatResponse:
        """Answer as the role in ``request.role`` would, at the planted skill."""
        text_in = "\n".join(str(m.get("content", "")) for m in request.messages)
        # The last message first: earlier turns may be few-shot examples of other tasks.
        task = self._find(str(request.messages[-1].get("content", ""))) if request.messages \
            else None
        task = task or self._find(text_in)
        rng = self._rng(request, "")
        role = request.role
        if role == "planner":
            text, natural = self._plan(task), 40
        elif role == "decomposer":
            text, natural = self._decompose(task), 60
        elif role == "judge" and "Answer A:" in text_in:
            text, natural = self._pairwise(task, text_in, rng), self.effects.judge_tokens
        elif role == "judge":
            text, natural = self._pointwise(task, text_in, rng), self.effects.judge_tokens
        else:
            text, natural = self._solve(task, text_in, request, rng), self.effects.answer_tokens
        completion = max(1, min(request.max_output, int(natural * (0.75 + 0.5 * rng.random()))))
        finish = "length" if completion >= request.max_output else "stop"
        usage = Usage(count_chat_tokens(request.messages, "gpt-4"), completion, None, None)
        logprob = None
        if request.logprobs:
            wrong = 1 - self.p_correct(task, request, text_in) if role not in (
                "planner", "decomposer", "judge") and task is not None else 0.0
            e = self.effects
            z = self._rng(request, "logprob").gauss(0.0, 1.0)
            logprob = min(0.0, -(e.logprob_base + e.logprob_weight * wrong)
                          + e.logprob_noise * z)
        return ChatResponse(text, usage, finish, None, self.model, logprob)

    # -- roles -----------------------------------------------------------------------------

    def p_correct(self, task: SimTask | None, request: ChatRequest, text_in: str) -> float:
        """The planted probability that this solver call is correct."""
        e = self.effects
        difficulty = 0.5 if task is None else task.difficulty
        logit = e.skill - e.difficulty_weight * (difficulty - 0.5)
        logit += e.token_weight * math.log2(max(1, request.max_output) / 256)
        if "Plan:" in text_in:
            logit += e.plan_bonus
        if "Earlier steps:" in text_in:
            logit += e.decompose_bonus
        if "Feedback:" in text_in and "Your previous answer:" in text_in:
            logit += e.feedback_bonus
        return _sigmoid(logit)

    def _solve(self, task: SimTask | None, text_in: str, request: ChatRequest,
               rng: random.Random) -> str:
        if task is None:  # a subtask: the simulator does not track intermediate results
            return f"Working on the step.\nAnswer: step-{rng.randint(0, 999)}"
        if not task.answer:  # a task without a gold answer: nothing to be right about
            return f"Reasoning (simulated).\nAnswer: simulated-{rng.randint(0, 999)}"
        if rng.random() < self.p_correct(task, request, text_in):
            return f"Reasoning (simulated).\nAnswer: {task.answer}"
        return f"Reasoning (simulated).\nAnswer: {_wrong(task.answer, rng)}"

    def _truth(self, task: SimTask | None, candidate: str) -> bool:
        return task is not None and _norm(extract_answer(candidate)) == _norm(task.answer)

    def _pointwise(self, task: SimTask | None, text_in: str, rng: random.Random) -> str:
        candidate = text_in.split("Proposed answer:", 1)[-1]
        correct = self._truth(task, candidate)
        accuracy = self.effects.judge_accuracy
        if _OUTCOME_ONLY in text_in and self.effects.outcome_judge_accuracy is not None:
            accuracy = self.effects.outcome_judge_accuracy
        right = rng.random() < accuracy
        good = correct if right else not correct
        score = 0.9 if good else 0.2
        verdict = "accept" if good else "reject"
        looks = "right" if good else "wrong"
        return f"The answer looks {looks}.\nSCORE: {score}\nVERDICT: {verdict}"

    def _pairwise(self, task: SimTask | None, text_in: str, rng: random.Random) -> str:
        body = text_in.split("Answer A:", 1)[-1]
        a, _, b = body.partition("Answer B:")
        ca, cb = self._truth(task, a), self._truth(task, b)
        pick = "A" if ca or not cb else "B"
        if ca == cb:
            pick = "A" if rng.random() < 0.5 else "B"
        elif rng.random() > self.effects.judge_accuracy:
            pick = "B" if pick == "A" else "A"
        return f"Comparing the two.\nWINNER: {pick}"

    def _plan(self, task: SimTask | None) -> str:
        d = 0.5 if task is None else task.difficulty
        if d < 0.3:
            mode, split = "direct", {"solver": 1.0}
        elif d < 0.6:
            mode, split = "parallel", {"solver": 0.75, "judge": 0.25}
        elif d < 0.8:
            mode, split = "sequential", {"solver": 0.6, "judge": 0.4}
        else:
            mode, split = "decompose", {"decomposer": 0.15, "solver": 0.85}
        return json.dumps({"mode": mode, "samples": 4, "rounds": 3, "difficulty": d,
                           "budget_split": split, "rationale": f"difficulty {d:.2f}"})

    def _decompose(self, task: SimTask | None) -> str:
        steps = [{"id": "1", "description": "Work out the first part.", "depends_on": []},
                 {"id": "2", "description": "Use it to finish.", "depends_on": ["1"]}]
        return json.dumps({"subtasks": steps})


def _wrong(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer of the same kind."""
    norm = answer.strip().lower()
    if norm in ("yes", "no"):
        return "no" if norm == "yes" else "yes"
    try:
        value = int(norm)
    except ValueError:
        return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(max(3, len(norm))))
    return str(value + rng.choice([-3, -2, -1, 1, 2, 3]))


def sim_tasks(items: Iterable[tuple[str, str, float | None]]) -> list[SimTask]:
    """SimTasks from ``(question, answer, difficulty)`` triples (unknown difficulty -> 0.5)."""
    return [SimTask(q, a, 0.5 if d is None else d) for q, a, d in items]

