"""No module reaches into another package's private modules.

Each package's ``__init__`` is its whole public surface: ``stratagem.agents._client`` may be
imported inside ``stratagem.agents`` only; everyone else (other packages, tests, benchmarks,
examples) uses ``stratagem.agents``. The check reads every ``.py`` file with :mod:`ast`, so it
sees imports inside functions too, ``importlib.import_module("stratagem.x._y")`` literals, and
the imports of scripts kept in string literals (code a test runs in a child process).

A test that injects a fault replaces a module's seam by its dotted name
(``monkeypatch.setattr("stratagem.cli._main.configure_logging", ...)``): that names where the
seam is without importing anything from it, and every test still calls public names only.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SOURCES = {
    # folder -> the module name its files are installed under (None: not in the package)
    "src/stratagem": "stratagem",
    "agents": "stratagem.agents",
    "graphs": "stratagem.graphs",
    "budgets": "stratagem.budgets",
    "tests": None,
    "bench": None,
    "examples": None,
}

# (path, private module) pairs let through. Empty since the run-account rewrite (issue 14)
# removed graphs/_common.py's import of agents._client.current_task_id; keep it empty.
ALLOWED: set[tuple[str, str]] = set()


def _files() -> Iterator[tuple[Path, str | None]]:
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue  # its own examples of what it catches
            if package is None:
                yield path, None
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield path, ".".join((package, *parts))


def _owner(target: str) -> str | None:
    """The package whose private module ``target`` is (``stratagem.agents._client`` ->
    ``stratagem.agents``), or ``None`` when ``target`` is public."""
    parts = target.split(".")
    if parts[0] != "stratagem":
        return None
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _resolve(node: ast.ImportFrom, module: str | None, is_package: bool) -> str | None:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if node.level == 0:
        return node.module
    if module is None:
        return None
    base = module.split(".")
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(tree: ast.AST, module: str | None, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every module the code imports or names for importlib."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            if base is None:
                continue
            yield node.lineno, base
            if _owner(base) is not None:
                continue  # reported once, as the private module it is
            for alias in node.names:  # `from stratagem.agents import _client`
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "import stratagem" in node.value.replace("from stratagem", "import stratagem")
        ):
            try:  # a child process's script: its imports count as this file's
                script = ast.parse(textwrap.dedent(node.value))
            except SyntaxError:
                continue
            for _, target in _targets(script, None, False):
                yield node.lineno, target
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def violations() -> list[str]:
    """``path:line: imports target`` for every import of a private module from outside its
    package."""
    found = []
    for path, module in _files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for line, target in _targets(tree, module, path.name == "__init__.py"):
            owner = _owner(target)
            if owner is None or (rel, target) in ALLOWED:
                continue
            if module is not None and (module == owner or module.startswith(f"{owner}.")):
                continue
            found.append(f"{rel}:{line}: imports {target} (use {owner})")
    return found


def test_no_cross_package_private_imports() -> None:
    found = violations()
    assert not found, "private modules imported from outside their package:\n" + "\n".join(
        found
    )


def test_the_allowed_exceptions_are_still_needed() -> None:
    """An entry of ``ALLOWED`` that no longer matches anything must be deleted."""
    seen = set()
    for path, module in _files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        seen |= {(rel, t) for _, t in _targets(tree, module, path.name == "__init__.py")}
    assert seen >= ALLOWED, f"stale entries in ALLOWED: {ALLOWED - seen}"


def test_the_check_sees_each_form_of_import() -> None:
    # (the offending imports are assembled, so that this file itself holds none)
    agents, tasks = "stratagem.agents", "stratagem.tasks"
    child = f"import json\\nfrom {tasks}._arith import divisors\\n"
    code = (
        f"SCRIPT = '{child}'\n"
        f"import {agents}._client\n"
        f"from {agents}._client import ModelClient\n"
        "from stratagem.agents import _client\n"
        "from stratagem.agents import ModelClient\n"
        "importlib.import_module('stratagem.budgets._tokens')\n"
        "from ._common import x\n"
    )
    targets = {t for _, t in _targets(ast.parse(code), "stratagem.graphs._run", False)}
    owners = {t: _owner(t) for t in targets}
    assert owners == {
        "stratagem.agents._client": "stratagem.agents",
        "stratagem.agents": None,
        "stratagem.budgets._tokens": "stratagem.budgets",
        "stratagem.graphs._common": "stratagem.graphs",
        "json": None,
        "stratagem.tasks._arith": "stratagem.tasks",
    }
