"""``stratagem.tasks.__all__`` is its whole public surface, and every public name is documented."""

from __future__ import annotations

import inspect

from stratagem import tasks


def test_all_matches_public_names() -> None:
    exported = set(tasks.__all__)
    assert len(tasks.__all__) == len(exported)
    assert all(hasattr(tasks, name) for name in exported)
    public = {
        name for name, value in vars(tasks).items()
        if not name.startswith("_") and not inspect.ismodule(value)
        and str(getattr(value, "__module__", "")).startswith("stratagem.tasks")
    }
    assert public <= exported, public - exported


def test_public_names_have_docstrings() -> None:
    for name in tasks.__all__:
        value = getattr(tasks, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
