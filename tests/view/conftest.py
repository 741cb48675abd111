"""A durable simulated ablation folder to view, and the viewer served from a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stratagem.ablation import load_config, run_ablation
from stratagem.view import serve

VIEW_CONFIG = """\
name = "view-sim"
output = "{output}"

[endpoint]
backend = "simulated"

[grid]
topologies = [
  "single",
  "plan_solve",
  {{ name = "best_of_n", n = 4, select = "verifier", label = "best_of_4+verifier" }},
  {{ name = "best_of_n", n = 8, select = "verifier", label = "best_of_8+verifier" }},
]
budgets = [400, 1600]
policies = ["uniform", "difficulty_adaptive"]

[[suites]]
name = "arith"
n = 3

[run]
durable = true
reallocation = "judge_feedback"
"""
RUNS = 4 * 2 * 2 * 3


@pytest.fixture(scope="session")
def view_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, durable simulated ablation (48 runs, with transfers): treat as read-only."""
    root = tmp_path_factory.mktemp("view-sim")
    config = root / "view.toml"
    config.write_text(VIEW_CONFIG.format(output=(root / "out").as_posix()), encoding="utf-8")
    cfg = load_config(config)
    asyncio.run(run_ablation(cfg, config_text=config.read_text(encoding="utf-8")))
    return cfg.output


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free port from a thread of its own; yields the URL."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    task = loop.create_task(serve(folder, port=0, ready=ready))

    def run() -> None:  # all on this thread: the caller's may run a loop (Playwright's)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(70)
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)


async def _wait(ready: asyncio.Future[str]) -> str:
    return await asyncio.wait_for(asyncio.shield(ready), 60)


@pytest.fixture
def viewer() -> Callable[[Path], Any]:
    """``with viewer(folder) as url:`` serves ``folder`` while the block runs."""
    return serving
