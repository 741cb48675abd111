"""Prompt templates for the four roles, and the repair prompt for structured output.

Every role takes its template as a constructor argument, so users replace a prompt without
subclassing::

    solver = LLMSolver(template=PromptTemplate(system="Be terse.", user="{task}\\nAnswer:"))

The defaults are written for the embedded SmolLM2-135M-Instruct: short, one instruction at a
time, with the expected output shown literally rather than described. Literal braces in a
template (JSON examples) are doubled, as :meth:`str.format` requires.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from stratagem.errors import ConfigError

__all__ = [
    "DECOMPOSER_PROMPT",
    "JUDGE_OUTCOME_PROMPT",
    "JUDGE_PAIRWISE_PROMPT",
    "JUDGE_POINTWISE_PROMPT",
    "PLANNER_PROMPT",
    "REPAIR_PROMPT",
    "SOLVER_PROMPT",
    "PromptTemplate",
]


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A system and a user message with :meth:`str.format` fields such as ``{task}``.

    Fields a template does not use are ignored when rendering, so a custom template may use
    any subset of the fields its role supplies (each role documents its fields).

    Attributes:
        system: The system message; an empty string sends none.
        user: The user message.
    """

    system: str
    user: str

    @property
    def fields(self) -> frozenset[str]:
        """The names of the fields this template uses."""
        return _fields_of(self.system) | _fields_of(self.user)

    def render(self, **fields: object) -> list[dict[str, str]]:
        """Fill in the fields and return the chat messages.

        Args:
            **fields: Values for the template's fields; extra ones are ignored.

        Returns:
            ``[{"role": "system", ...}, {"role": "user", ...}]`` (no system message when
            :attr:`system` is empty).

        Raises:
            ConfigError: If the template uses a field that was not supplied, or is not a
                valid format string.
        """
        missing = sorted(self.fields - fields.keys())
        if missing:
            raise ConfigError(
                f"prompt template uses field(s) {', '.join(repr(m) for m in missing)} that "
                f"this role does not supply; available fields: "
                f"{', '.join(sorted(fields)) or 'none'} (write a literal brace as '{{{{' or "
                f"'}}}}')"
            )
        messages: list[dict[str, str]] = []
        try:
            if self.system:
                messages.append({"role": "system", "content": self.system.format(**fields)})
            messages.append({"role": "user", "content": self.user.format(**fields)})
        except (IndexError, KeyError, AttributeError, ValueError) as exc:
            raise ConfigError(f"prompt template cannot be rendered: {exc!r}") from exc
        return messages


def _fields_of(text: str) -> frozenset[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"prompt template is not a valid format string: {exc}") from exc
    names = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        # "{step.title}" and "{steps[0]}" need the field "step"/"steps"; "{}" and "{0}" are
        # positional, which render() never supplies, so they are reported as missing.
        root = name.split(".", 1)[0].split("[", 1)[0]
        names.add(root or "<positional>")
    return frozenset(names)


PLANNER_PROMPT = PromptTemplate(
    system="You plan how to solve a task. Reply with one JSON object only.",
    user=(
        "Task: {task}\n\n"
        "Pick a mode:\n"
        '- "direct": solve it at once\n'
        '- "decompose": split it into steps\n'
        '- "parallel": try several times, keep the best\n'
        '- "sequential": solve, then improve it in rounds\n'
        "Roles: {roles}. Token budget: {budget}.\n\n"
        "Reply like this:\n"
        '{{"mode": "direct", "samples": 1, "rounds": 1, "difficulty": 0.5, '
        '"budget_split": {{"solver": 1.0}}, "rationale": "why"}}'
    ),
)
"""Planner fields: ``task``, ``roles`` (comma-separated), ``budget`` (tokens or "unlimited")."""

DECOMPOSER_PROMPT = PromptTemplate(
    system="You split a task into small steps. Reply with one JSON object only.",
    user=(
        "Task: {task}\n\n"
        "Split it into at most {max_subtasks} steps. A step may use the results of earlier "
        "steps.\n\n"
        "Reply like this:\n"
        '{{"subtasks": [{{"id": "1", "description": "first step", "depends_on": []}}, '
        '{{"id": "2", "description": "second step", "depends_on": ["1"]}}]}}'
    ),
)
"""Decomposer fields: ``task``, ``max_subtasks``."""

SOLVER_PROMPT = PromptTemplate(
    system="You solve tasks step by step.",
    user=(
        "{context}Task: {task}\n\n"
        "Think step by step. End with a last line of the form:\n"
        "Answer: <your answer>"
    ),
)
"""Solver fields: ``task``, ``context`` (earlier steps, previous answer and feedback, already
laid out, or empty), and the raw parts ``prior_steps``, ``previous``, ``feedback`` (each an
empty string when absent)."""

JUDGE_POINTWISE_PROMPT = PromptTemplate(
    system="You are a strict grader. Think first, then score.",
    user=(
        "Task: {task}\n\n"
        "Proposed answer:\n{candidate}\n\n"
        "Is the answer correct? Explain briefly. Then end with these two lines:\n"
        "SCORE: <a number from 0 to 1>\n"
        "VERDICT: accept or reject"
    ),
)
"""Pointwise judge fields: ``task``, ``candidate``."""

JUDGE_OUTCOME_PROMPT = PromptTemplate(
    system="You are a strict grader. Give only the score.",
    user=(
        "Task: {task}\n\n"
        "Proposed answer:\n{candidate}\n\n"
        "Is the answer correct? Do not explain. Reply with only these two lines:\n"
        "SCORE: <a number from 0 to 1>\n"
        "VERDICT: accept or reject"
    ),
)
"""The outcome-only judge (score, no rationale first): the control of a reasoning judge.
Fields: ``task``, ``candidate``."""

JUDGE_PAIRWISE_PROMPT = PromptTemplate(
    system="You are a strict grader. Think first, then choose.",
    user=(
        "Task: {task}\n\n"
        "Answer A:\n{a}\n\n"
        "Answer B:\n{b}\n\n"
        "Which answer is better? Explain briefly. Then end with this line:\n"
        "WINNER: A or B"
    ),
)
"""Pairwise judge fields: ``task``, ``a``, ``b``."""

REPAIR_PROMPT = PromptTemplate(
    system="",
    user="I could not read your reply: {error}\nReply again with only {format}.",
)
"""Sent as a follow-up user message when a structured reply does not parse. Fields: ``error``
(what went wrong) and ``format`` (what was expected). Its system message is not used."""
