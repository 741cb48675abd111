"""The solver: solves a task or subtask, optionally with earlier steps and judge feedback."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import ConfigDict

from stratagem.agents._client import ModelClient
from stratagem.agents._prompts import SOLVER_PROMPT, PromptTemplate
from stratagem.agents._structured import RoleOutput

__all__ = ["LLMSolver", "Solution", "Solver", "extract_answer"]

_ANSWER = re.compile(r"(?i)answer\s*[:=]\s*(.+)")
_DECOR = " \t*_`"  # whitespace and markdown emphasis around an answer


def extract_answer(text: str) -> str:
    """The final answer in a solver's reply.

    The last line containing ``Answer: ...`` (or ``answer = ...``, any case) gives the text
    after the colon (or the next line, if nothing follows the colon); without one, the last
    non-empty line is the answer. Surrounding
    whitespace, markdown emphasis and a trailing full stop are removed.

    Example:
        >>> extract_answer("2 + 2 is 4.\\n**Answer:** 4.")
        '4'
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        match = _ANSWER.search(lines[i])
        if match:
            answer = _clean(match.group(1))
            # "**Answer:**" alone on its line: the answer is on the next one.
            return answer or (_clean(lines[i + 1]) if i + 1 < len(lines) else "")
    return _clean(lines[-1]) if lines else ""


def _clean(answer: str) -> str:
    answer = answer.strip(_DECOR)
    if answer.endswith("."):
        answer = answer[:-1].strip(_DECOR)
    return answer


class Solution(RoleOutput):
    """A solver's reply and the answer extracted from it."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    answer: str
    """The extracted final answer (see :func:`extract_answer`)."""
    text: str
    """The full reply, reasoning included."""
    mean_logprob: float | None = None
    """The reply's mean token log-probability, when asked for and sent (``None``: unknown)."""


@runtime_checkable
class Solver(Protocol):
    """Solves a task or subtask."""

    async def solve(
        self,
        client: ModelClient,
        task: str,
        *,
        prior_steps: Sequence[tuple[str, str]] = (),
        feedback: str | None = None,
        previous: str | None = None,
        node: str = "solver",
        branch: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
        logprobs: bool = False,
    ) -> Solution:
        """Solve ``task``.

        Args:
            client: Makes and records the model calls.
            task: The task or subtask text.
            prior_steps: Earlier steps as ``(description, result)`` pairs, in order.
            feedback: A judge's critique of ``previous``, for refinement.
            previous: An earlier attempt at this task, for refinement.
            node: The graph node, for the ledger.
            branch: The graph branch, for the ledger.
            temperature: Sampling temperature (vary it, or the seed, for parallel samples).
            seed: Sampling seed.
            stop: Stop sequences.
            stream: Stream the reply (usage still recorded; see :meth:`ModelClient.complete`).
            task_id: The LangGraph task id, for the ledger.
            labels: Labels put on every ledger row of the call.
            extra: Provider-specific request fields.
            allowance: A cap on this call's own total tokens (a branch's reserved share).
            logprobs: Ask for the reply's token log-probabilities
                (:attr:`Solution.mean_logprob`; a probe's difficulty signal). Graphs pass it
                only when they want it, so a solver without this parameter still works
                everywhere else.
        """
        ...


class LLMSolver:
    """The default solver: one model call, then :func:`extract_answer`.

    Args:
        template: The prompt. Fields: ``task``; ``context`` (earlier steps, previous answer
            and feedback laid out as text, or empty); and the raw parts ``prior_steps``,
            ``previous``, ``feedback`` (empty strings when absent).
        max_output: Output cap per call.
        role: The role charged in the ledger.
        examples: Worked examples for few-shot prompting, ``(task, reply)`` pairs (for a
            suite's, :meth:`~stratagem.tasks.Suite.demonstrations`). Each is shown as an
            earlier exchange, between the system message and the task: the task rendered
            with the same template (no context), then the reply as the model's turn. Small
            models copy the reply's form, so it should end as the template asks
            (``Answer: ...``). Their tokens are billed as prompt tokens of every call.
    """

    def __init__(
        self,
        template: PromptTemplate = SOLVER_PROMPT,
        *,
        max_output: int = 512,
        role: str = "solver",
        examples: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.template = template
        self.max_output = max_output
        self.role = role
        self.examples = tuple((str(task), str(reply)) for task, reply in examples)
        self._shots = [
            turn
            for task, reply in self.examples
            for turn in (self._user_turn(task), {"role": "assistant", "content": reply})
        ]

    def _user_turn(self, task: str) -> dict[str, str]:
        return self.template.render(task=task, context="", prior_steps="", previous="",
                                    feedback="")[-1]

    async def solve(
        self,
        client: ModelClient,
        task: str,
        *,
        prior_steps: Sequence[tuple[str, str]] = (),
        feedback: str | None = None,
        previous: str | None = None,
        node: str = "solver",
        branch: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        stream: bool = False,
        task_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        allowance: int | None = None,
        logprobs: bool = False,
    ) -> Solution:
        """Solve ``task`` (see :meth:`Solver.solve`)."""
        steps = "\n".join(
            f"Step {i}: {desc}\nResult: {result}"
            for i, (desc, result) in enumerate(prior_steps, start=1)
        )
        context = "".join([
            f"Earlier steps:\n{steps}\n\n" if steps else "",
            f"Your previous answer:\n{previous}\n\n" if previous else "",
            f"Feedback:\n{feedback}\n\n" if feedback else "",
        ])
        messages = self.template.render(
            task=task, context=context, prior_steps=steps,
            previous=previous or "", feedback=feedback or "",
        )
        if self._shots:
            at = 1 if messages[0]["role"] == "system" else 0
            messages[at:at] = [dict(turn) for turn in self._shots]
        completion = await client.complete(
            messages, role=self.role, node=node, branch=branch, max_output=self.max_output,
            temperature=temperature, seed=seed, stop=stop, stream=stream, task_id=task_id,
            labels=labels, extra=extra, allowance=allowance, logprobs=logprobs,
        )
        solution = Solution(answer=extract_answer(completion.text), text=completion.text,
                            mean_logprob=completion.mean_logprob)
        return solution.from_completions(completion)
