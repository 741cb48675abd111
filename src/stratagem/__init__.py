"""stratagem: multi-agent LLM workflows that know where the tokens went.

The notebook API is here: :func:`ablate` (and :func:`aablate`) runs or resumes an ablation,
:func:`load` opens an output folder, both as an :class:`Ablation`. They live in
:mod:`stratagem.ablation` and are imported on first use, so ``import stratagem`` stays cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("stratagem")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from stratagem.ablation import Ablation, aablate, ablate, load

__all__ = ["Ablation", "__version__", "aablate", "ablate", "load"]

_LAZY = frozenset({"Ablation", "aablate", "ablate", "load"})


def __getattr__(name: str) -> Any:
    # Lazily: stratagem.ablation imports LangGraph, pandas and the roles, which import this
    # module for __version__ (an eager import here would be circular, and slow).
    if name in _LAZY:
        from stratagem import ablation  # noqa: PLC0415

        return getattr(ablation, name)
    raise AttributeError(f"module 'stratagem' has no attribute {name!r}")
