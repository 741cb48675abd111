"""``stratagem view``: browse an output folder in a local web app (read-only)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from stratagem.cli._common import console
from stratagem.view import serve


def view_command(
    folder: Annotated[Path, typer.Argument(help="An output folder of `stratagem ablate`.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).",
                                      min=0, max=65535)] = 8765,
) -> None:
    """Look at the runs, one run's trace and the report in a browser; follows a running
    ablation. Read-only on the folder; Ctrl-C stops it."""

    async def main() -> None:
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve(folder, port=port, ready=ready))
        either: list[asyncio.Future[Any]] = [server, ready]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            console.print(f"stratagem view: {ready.result()}  (Ctrl-C to stop)",
                          highlight=False, markup=False)
        await server  # raises what stopped it (a bad folder, a taken port)

    asyncio.run(main())
