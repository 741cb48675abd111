"""``stratagem serve-local``: the embedded model server in the foreground."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from stratagem.agents import LocalModelServer
from stratagem.cli._common import console


def serve_command(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")]
    = None,
) -> None:
    """Start SmolLM2-135M-Instruct on 127.0.0.1 and serve until Ctrl-C."""
    with LocalModelServer(port=port) as server:
        console.print(f"serving {server.model} at {server.base_url} (Ctrl-C to stop)",
                      highlight=False)
        console.print(f"  STRATAGEM_BASE_URL={server.base_url} STRATAGEM_MODEL={server.model}",
                      highlight=False, markup=False)
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping")
