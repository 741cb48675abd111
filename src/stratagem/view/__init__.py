"""``stratagem view``: a read-only web viewer of an ablation's output folder, on 127.0.0.1.

* :class:`OutputFolder` opens a folder read-only (SQLite ``mode=ro``) and refuses one that
  is not an output folder or was written by a newer stratagem;
* :class:`RunIndex` pages, filters and sorts its runs with indexed SQL;
* :func:`build_trace` turns one run's ledger rows, transfers and checkpoints into a trace
  tree;
* :func:`make_app` and :func:`serve` are the aiohttp app and its server; the front end is
  plain HTML, CSS and JavaScript served from the package, with no build step.
"""

from __future__ import annotations

from stratagem.view._folder import FILTERS, SORTS, OutputFolder, Page, RunIndex, connect_ro
from stratagem.view._server import FOLDER_KEY, make_app, serve
from stratagem.view._trace import build_trace

__all__ = [
    "FILTERS",
    "FOLDER_KEY",
    "SORTS",
    "OutputFolder",
    "Page",
    "RunIndex",
    "build_trace",
    "connect_ro",
    "make_app",
    "serve",
]
