"""The viewer's web app (aiohttp, loopback only): a JSON API over an output folder, and the
static front end that reads it.

Routes:
    ``GET /``: the front end (``static/index.html``; the runs table, a run, the report).
    ``GET /static/{name}``: its script and style sheet, from the package.
    ``GET /api/summary``: the folder, its run count and the values of each filter.
    ``GET /api/runs?topology=&budget=&policy=&suite=&correct=&sort=&desc=&offset=&limit=``:
        one page of runs.
    ``GET /api/run/{run_id}``: one run's trace (see :func:`build_trace`).
    ``GET /api/status``: the run count after copying new runs into the index: the live mode
        polls it.
    ``GET /report/``: the ablation's HTML report (plots, attribution, findings), written to
        a temporary folder (never into the output folder) and rewritten when runs were added.

Nothing is fetched from elsewhere: the report is self-contained and the front end has no
dependencies.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from aiohttp import web

from stratagem.ablation import write_report
from stratagem.errors import ConfigError
from stratagem.view._folder import FILTERS, OutputFolder
from stratagem.view._trace import build_trace

__all__ = ["FOLDER_KEY", "make_app", "serve"]

FOLDER_KEY = web.AppKey("folder", OutputFolder)
_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_NO_CACHE = {"Cache-Control": "no-store"}


def _static(name: str) -> bytes:
    return files("stratagem.view").joinpath("static", name).read_bytes()


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=_NO_CACHE)


class _Report:
    """The report, built on demand in a thread and rebuilt once the run count changed."""

    def __init__(self, folder: OutputFolder) -> None:
        self.folder = folder
        self.dir = Path(tempfile.mkdtemp(prefix="stratagem-view-"))
        self.built_for = -1
        self.lock = asyncio.Lock()

    def _build(self) -> Path:
        df = self.folder.results_frame()
        if df.empty:
            raise ConfigError(f"{self.folder.path} has no finished runs yet")
        rep = write_report(df, self.folder.ledger(), self.dir,
                           title=f"stratagem ablation: {self.folder.path.name}",
                           config_text=self.folder.config_text, n_boot=200)
        return rep.html

    async def html(self) -> Path:
        async with self.lock:
            count = self.folder.index.count()
            path = self.dir / "report.html"
            if count != self.built_for or not path.is_file():
                path = await asyncio.to_thread(self._build)
                self.built_for = count
            return path

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


_REPORT_KEY = web.AppKey("report", _Report)


async def _index(_: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html",
                        headers=_NO_CACHE)


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=_STATIC[name], headers=_NO_CACHE)


async def _summary(request: web.Request) -> web.Response:
    folder = request.app[FOLDER_KEY]
    folder.index.sync()
    return web.json_response({
        "folder": str(folder.path), "name": folder.path.name, "runs": folder.index.count(),
        "facets": folder.index.facets(), "filters": list(FILTERS),
        "durable": (folder.path / "checkpoints.sqlite").is_file(),
    }, headers=_NO_CACHE)


async def _status(request: web.Request) -> web.Response:
    folder = request.app[FOLDER_KEY]
    new = folder.index.sync()
    return web.json_response({"runs": folder.index.count(), "new": new}, headers=_NO_CACHE)


async def _runs(request: web.Request) -> web.Response:
    folder = request.app[FOLDER_KEY]
    q = request.query
    filters = {k: q[k] for k in FILTERS if q.get(k, "") != ""}
    try:
        page = folder.index.page(filters, sort=q.get("sort", "finished_at"),
                                 desc=q.get("desc", "0") in ("1", "true"),
                                 offset=int(q.get("offset", "0")),
                                 limit=int(q.get("limit", "50")))
    except (ConfigError, ValueError) as exc:
        return _bad(str(exc))
    return web.json_response({"total": page.total, "offset": page.offset, "limit": page.limit,
                              "rows": page.rows}, headers=_NO_CACHE)


async def _run(request: web.Request) -> web.Response:
    folder = request.app[FOLDER_KEY]
    run_id = request.match_info["run_id"]
    record = folder.record(run_id)
    if record is None:
        return _bad(f"no run {run_id!r} in {folder.path}", 404)
    trace = build_trace(record, folder.calls(run_id), folder.transfers(run_id),
                        folder.checkpoint_writes(run_id))
    return web.json_response(trace, headers=_NO_CACHE, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)  # datetimes in checkpointed values


async def _report(request: web.Request) -> web.StreamResponse:
    report: _Report = request.app[_REPORT_KEY]
    try:
        path = await report.html()
    except ConfigError as exc:
        return _bad(str(exc), 404)
    return web.FileResponse(path, headers=_NO_CACHE)


def make_app(folder: OutputFolder) -> web.Application:
    """The viewer's app over an opened folder (the caller closes the folder)."""
    app = web.Application()
    app[FOLDER_KEY] = folder
    app[_REPORT_KEY] = _Report(folder)

    async def cleanup(app: web.Application) -> AsyncIterator[None]:
        yield
        app[_REPORT_KEY].close()

    app.cleanup_ctx.append(cleanup)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _asset)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/api/runs", _runs)
    app.router.add_get("/api/run/{run_id}", _run)
    app.router.add_get("/report/", _report)
    return app


async def serve(folder: str | Path, *, port: int = 8765,
                ready: asyncio.Future[str] | None = None) -> None:
    """Serve ``folder`` on 127.0.0.1 until cancelled.

    Args:
        folder: An output folder of ``stratagem ablate``.
        port: The port (0: a free one).
        ready: Set to the viewer's URL once it accepts connections.

    Raises:
        ConfigError: If ``folder`` is not an output folder, or was written by a newer
            stratagem, or the port is taken.
    """
    opened = OutputFolder(folder)
    runner: web.AppRunner | None = None
    try:
        opened.index.sync()
        runner = web.AppRunner(make_app(opened), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): pick "
                              "another --port, or --port 0 for a free one") from exc
        bound = runner.addresses[0][1]
        if ready is not None:
            ready.set_result(f"http://127.0.0.1:{bound}/")
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        opened.close()
