"""``stratagem.attribution.__all__`` is its whole public surface, documented."""

from __future__ import annotations

import inspect

from stratagem import attribution


def test_all_matches_public_names_and_each_has_a_docstring() -> None:
    public = {
        n for n, v in vars(attribution).items()
        if not n.startswith("_") and not inspect.ismodule(v)
        and str(getattr(v, "__module__", "")).startswith("stratagem.attribution")
    }
    assert public == set(attribution.__all__)
    for name in attribution.__all__:
        assert inspect.getdoc(getattr(attribution, name)), name
