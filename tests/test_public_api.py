"""Each package's ``__all__`` is its whole public surface, and every name in it exists."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "stratagem",
    "stratagem.agents",
    "stratagem.budgets",
    "stratagem.graphs",
    "stratagem.errors",
    "stratagem.logging",
    "stratagem.testing",
    "stratagem.cli",
    "stratagem.ablation",
    "stratagem.attribution",
    "stratagem.report",
    "stratagem.simulate",
    "stratagem.tasks",
    "stratagem.integrations",
    "stratagem.integrations.langchain",
    "stratagem.integrations.otel",
]


def _defined_in(module: str | None, package: str) -> bool:
    """Whether a name was defined by ``package`` itself or one of its private modules."""
    return module is not None and (module == package or module.startswith(f"{package}._"))


@pytest.mark.parametrize("name", PACKAGES)
def test_all_matches_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(module.__all__) == len(exported), "duplicates in __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and not inspect.ismodule(v)
        and _defined_in(getattr(v, "__module__", None), name)
    }
    assert public <= exported, f"{name} exposes names missing from __all__: {public - exported}"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        value = getattr(module, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"


def test_subpackages_are_not_top_level_names() -> None:
    import stratagem.budgets

    assert stratagem.budgets.__name__ == "stratagem.budgets"
    for top in ("budgets", "graphs"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(top)
