"""Values that belong to one event loop: made on first use there, dropped when it ends.

Connection pools, semaphores and locks are bound to the loop they were made in, so a client
used from several loops (``graphs.run`` makes one per run) needs one of each per loop. Kept in
a weak table alone, they would never go: every such object references its loop. Here each
loop's entry is held by an async generator started on that loop, whose ``finally`` (run when
the loop shuts down: ``asyncio.run`` closes unfinished async generators first) drops the entry
and closes the value, whether or not anyone called :meth:`PerLoop.aclose`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """A ``T`` per running event loop.

    Args:
        make: Builds the value, inside the loop.
        close: Releases it, inside the loop, when the loop ends or on :meth:`aclose`.
    """

    def __init__(self, make: Callable[[], T],
                 close: Callable[[T], Awaitable[None]] | None = None) -> None:
        self._make = make
        self._close = close
        self._held: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[T, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        """Loops holding a value now."""
        return len(self._held)

    async def get(self) -> T:
        """This loop's value, made on first use."""
        loop = asyncio.get_running_loop()
        held = self._held.get(loop)
        if held is None:
            value = self._make()
            keeper = self._keep(loop, value)
            held = self._held[loop] = (value, keeper)
            await anext(keeper)  # started here, so the loop's shutdown finishes it
        return held[0]

    async def aclose(self) -> None:
        """Drop (and close) this loop's value now, if it has one."""
        held = self._held.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()

    async def _keep(self, loop: asyncio.AbstractEventLoop,
                    value: T) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # Dropped first: the entry references the loop, which would otherwise stay
            # alive, with everything it references, for as long as this table.
            self._held.pop(loop, None)
            if self._close is not None:
                await self._close(value)
