"""``stratagem.report.__all__`` is its whole public surface, documented."""

from __future__ import annotations

import inspect

from stratagem import report


def test_all_matches_public_names() -> None:
    exported = set(report.__all__)
    assert len(exported) == len(report.__all__)
    assert all(hasattr(report, name) for name in exported)
    public = {
        n
        for n, v in vars(report).items()
        if not n.startswith("_")
        and not inspect.ismodule(v)
        and getattr(v, "__module__", "").startswith("stratagem.report._")
    }
    assert public == exported


def test_public_names_have_docstrings() -> None:
    for name in report.__all__:
        assert inspect.getdoc(getattr(report, name)), name
