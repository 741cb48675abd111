"""User suites from a JSONL file: one task per line, with a gold answer or a checker spec."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from stratagem.agents import answers_match, extract_answer, normalize_answer, parse_number
from stratagem.errors import ConfigError
from stratagem.tasks._task import Suite, Task, check_count, exact_check

__all__ = ["CHECKER_TYPES", "JsonlSuite", "load_jsonl_suite"]

_FIELDS = ("id", "question", "answer", "checker", "difficulty", "metadata")
CHECKER_TYPES: dict[str, str] = {
    "exact": '{"type": "exact", "value": "Paris" | ["Paris", "Paris, France"]}: equal after '
             "normalisation (numbers compared numerically)",
    "contains": '{"type": "contains", "value": "blue"}: the normalised answer contains it',
    "regex": '{"type": "regex", "pattern": "\\\\d+ km", "ignore_case"?: true}: the answer, '
             "stripped, matches the whole pattern",
    "number": '{"type": "number", "value": 3.14, "tolerance"?: 0.01}: a number within the '
              "absolute tolerance (default 0: exact)",
    "choice": '{"type": "choice", "value": "B", "options"?: ["A", "B", "C", "D"]}: the answer '
              'picks that option ("B", "(B)", "B) text", "Option B")',
}
"""The checker types a JSONL task may use, with their fields and what passes."""

_KEYS = {
    "exact": ({"value"}, set()), "contains": ({"value"}, set()),
    "regex": ({"pattern"}, {"ignore_case"}), "number": ({"value"}, {"tolerance"}),
    "choice": ({"value"}, {"options"}),
}
_CHOICE = re.compile(r"(?:option|choice|answer)?\s*\(?([a-z0-9]+)\)?(?:[.):\s]|$)")


class _LineError(ValueError):
    """What is wrong with one line (the caller adds the path and line number)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _answer_text(value: object, what: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if _is_number(value):
        return str(value)
    raise _LineError(f"{what} must be a non-empty string or a number, got {value!r}")


def _checker(spec: object) -> dict[str, Any]:
    """``spec`` validated and normalised (JSON-able, as stored in the task's metadata)."""
    if not isinstance(spec, dict):
        raise _LineError(f"'checker' must be an object, got {spec!r}")
    kind = spec.get("type")
    if kind not in _KEYS:
        raise _LineError(f"checker type must be one of {', '.join(_KEYS)}, got {kind!r}")
    required, optional = _KEYS[kind]
    missing = required - set(spec)
    unknown = set(spec) - required - optional - {"type"}
    if missing or unknown:
        problem = (f"missing {sorted(missing)}" if missing else f"unknown keys {sorted(unknown)}")
        raise _LineError(f"{kind} checker: {problem}; expected {CHECKER_TYPES[kind]}")
    out: dict[str, Any] = {"type": kind}
    if kind == "exact":
        values = spec["value"] if isinstance(spec["value"], list) else [spec["value"]]
        if not values:
            raise _LineError("exact checker: 'value' must not be an empty list")
        out["value"] = [_answer_text(v, "exact checker 'value'") for v in values]
    elif kind == "contains":
        out["value"] = _answer_text(spec["value"], "contains checker 'value'")
    elif kind == "regex":
        pattern, ignore_case = spec["pattern"], spec.get("ignore_case", False)
        if not isinstance(pattern, str) or not isinstance(ignore_case, bool):
            raise _LineError("regex checker: 'pattern' must be a string and 'ignore_case' "
                             "true or false")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _LineError(f"regex checker: invalid pattern {pattern!r}: {exc}") from None
        out |= {"pattern": pattern, "ignore_case": ignore_case}
    elif kind == "number":
        value, tolerance = spec["value"], spec.get("tolerance", 0)
        if not (_is_number(value) or isinstance(value, str)) or parse_number(str(value)) is None:
            raise _LineError(f"number checker: 'value' must be a number, got {value!r}")
        if not _is_number(tolerance) or tolerance < 0:
            raise _LineError(f"number checker: 'tolerance' must be a number >= 0, got "
                             f"{tolerance!r}")
        out |= {"value": str(value), "tolerance": tolerance}
    else:
        value, options = spec["value"], spec.get("options")
        if not isinstance(value, str) or not value.strip():
            raise _LineError(f"choice checker: 'value' must be an option label such as 'B', "
                             f"got {value!r}")
        if options is not None:
            if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
                raise _LineError("choice checker: 'options' must be a list of labels")
            if value not in options:
                raise _LineError(f"choice checker: 'value' {value!r} is not one of the "
                                 f"options {options}")
            out["options"] = options
        out["value"] = value
    return out


def check_spec(spec: dict[str, Any], answer: str) -> bool:
    """Whether an extracted ``answer`` passes a (validated) checker ``spec``."""
    kind = spec["type"]
    if kind == "exact":
        return any(answers_match(answer, gold) for gold in spec["value"])
    if kind == "contains":
        return normalize_answer(spec["value"]) in normalize_answer(answer)
    if kind == "regex":
        flags = re.IGNORECASE if spec["ignore_case"] else 0
        return re.fullmatch(spec["pattern"], answer.strip(), flags) is not None
    if kind == "number":
        got, gold = parse_number(answer), parse_number(spec["value"])
        return (got is not None and gold is not None
                and abs(got - gold) <= Fraction(str(spec["tolerance"])))
    match = _CHOICE.match(normalize_answer(answer))
    return match is not None and match.group(1) == spec["value"].casefold()


def _parse(line: str, number: int, name: str) -> Task:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _LineError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(row, dict):
        raise _LineError(f"expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        raise _LineError(f"unknown field(s) {unknown}; the fields are {', '.join(_FIELDS)}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _LineError("missing 'question' (a non-empty string)")
    task_id = row.get("id", f"{name}/{number}")
    if not isinstance(task_id, str) or not task_id:
        raise _LineError(f"'id' must be a non-empty string, got {task_id!r}")
    if ("answer" in row) == ("checker" in row):
        raise _LineError("give exactly one of 'answer' (exact match) and 'checker'")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict) or "checker" in metadata:
        raise _LineError("'metadata' must be an object without a 'checker' key")
    difficulty = row.get("difficulty")
    if difficulty is not None and (not _is_number(difficulty) or not 0 <= difficulty <= 1):
        raise _LineError(f"'difficulty' must be a number from 0 to 1, got {difficulty!r}")
    if "answer" in row:
        answer: str | None = _answer_text(row["answer"], "'answer'")
    else:
        spec = _checker(row["checker"])
        metadata = {**metadata, "checker": spec}
        answer = spec["value"][0] if spec["type"] == "exact" else (
            spec["value"] if spec["type"] in ("number", "choice") else None)
    return Task(id=task_id, suite=name, question=question, answer=answer,
                difficulty=difficulty, metadata=metadata)


class JsonlSuite(Suite):
    """Tasks read from a JSONL file, one JSON object per line::

        {"id": "capital-fr", "question": "...", "answer": "Paris", "difficulty": 0.2}
        {"question": "...", "checker": {"type": "number", "value": 3.14, "tolerance": 0.01}}

    Fields: ``question`` (required: the full prompt, which should ask for a final line
    ``Answer: ...``); exactly one of ``answer`` (exact match after normalisation, numbers
    compared numerically) and ``checker`` (see :data:`CHECKER_TYPES`); optional ``id``
    (default ``NAME/LINE``), ``difficulty`` (0 to 1) and ``metadata`` (an object). Blank lines
    and lines starting with ``#`` are skipped. Checkers read the answer that
    :func:`~stratagem.agents.extract_answer` finds in the reply.

    Args:
        path: The JSONL file.
        name: The suite name on its tasks (default: the file name without extension).

    Raises:
        ConfigError: The file cannot be read, holds no task, or a line is malformed; the
            message starts ``PATH:LINE:`` and says what is wrong.
    """

    name = "jsonl"

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        try:
            lines = self.path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read task file {self.path}: {exc}") from exc
        tasks: list[Task] = []
        seen: dict[str, int] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                task = _parse(line, number, self.name)
                if task.id in seen:
                    raise _LineError(f"duplicate id {task.id!r} (first on line {seen[task.id]})")
            except _LineError as exc:
                raise ConfigError(f"{self.path}:{number}: {exc}") from None
            seen[task.id] = number
            tasks.append(task)
        if not tasks:
            raise ConfigError(f"{self.path}: no tasks in the file (one JSON object per line)")
        self._tasks = tuple(tasks)

    @property
    def tasks(self) -> list[Task]:
        """Every task, in the file's order."""
        return list(self._tasks)

    def generate(self, n: int, *, seed: int = 0) -> list[Task]:
        """The first ``n`` tasks of a seeded shuffle of the file (use :attr:`tasks` for the
        file's order).

        Raises:
            ConfigError: ``n`` is negative or more than the file holds.
        """
        check_count(n, available=len(self._tasks))
        return random.Random(f"jsonl:{seed}").sample(list(self._tasks), n)

    def _demonstration_candidates(self, seed: int) -> Iterator[Task]:
        """The whole pool, in a seeded order of its own."""
        return iter(random.Random(f"jsonl-demonstrations:{seed}").sample(
            list(self._tasks), len(self._tasks)))

    def check(self, task: Task, response: str) -> bool:
        """The task's checker spec, or exact match with its ``answer``, passes."""
        spec = task.metadata.get("checker")
        if spec is None:
            return exact_check(task, response)
        try:
            return check_spec(spec, extract_answer(response))
        except (KeyError, TypeError, ValueError, re.error):  # a hand-made task's bad spec
            return False


def load_jsonl_suite(path: str | Path, name: str | None = None) -> JsonlSuite:
    """Read a JSONL task file (see :class:`JsonlSuite`); same as ``get_suite("jsonl",
    path=...)``."""
    return JsonlSuite(path, name)
