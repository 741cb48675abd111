"""The ``stratagem`` command line. Thin: commands parse, validate and call library functions."""

from __future__ import annotations

from stratagem.cli._main import app, main

__all__ = ["app", "main"]
