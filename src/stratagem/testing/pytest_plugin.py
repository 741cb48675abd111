"""pytest fixtures for stratagem's test doubles.

Enable them in a root ``conftest.py``::

    pytest_plugins = ["stratagem.testing.pytest_plugin"]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._fake_server import FakeOpenAIServer

__all__ = ["fake_openai_server"]


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """A started :class:`FakeOpenAIServer` with default settings, stopped after the test.

    Script it inside the test with :meth:`FakeOpenAIServer.enqueue_faults` or by assigning
    :attr:`FakeOpenAIServer.responder`.

    Yields:
        The running server; connect with ``openai.AsyncOpenAI(base_url=server.base_url, ...)``.
    """
    with FakeOpenAIServer() as server:
        yield server
