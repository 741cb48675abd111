"""One import guard for the optional extras, so every missing one is named the same way."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(extra: str, package: str, exc: ImportError) -> ImportError:
    """The error to raise when ``package`` (from the ``extra`` extra) cannot be imported."""
    return ImportError(
        f"stratagem.integrations.{extra} needs {package}, which is not installed: "
        f"pip install 'stratagem[{extra}]' ({exc})"
    )
