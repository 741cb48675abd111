"""Test doubles that report token usage, so budget and ledger logic is testable offline.

* :class:`ScriptedModel`: an in-process backend replaying a script of replies and errors;
  it fails on too many *or too few* calls.
* :class:`FunctionModel`: an in-process backend answering with a function.
* :class:`FakeOpenAIServer`: a loopback OpenAI-compatible HTTP server with scripted
  :class:`Fault`\\ s and a :attr:`~FakeOpenAIServer.log` of every request and the usage it sent.
* :class:`UsageProxy`: the same server forwarding to a real upstream (the embedded llama.cpp
  server), counting what the upstream billed for every reply, delivered or not.

The ``fake_openai_server`` pytest fixture lives in :mod:`stratagem.testing.pytest_plugin`
(enable it with ``pytest_plugins = ["stratagem.testing.pytest_plugin"]``); it is not imported
here, so this package does not need pytest at runtime.
"""

from __future__ import annotations

from stratagem.testing._fake_server import FakeOpenAIServer, RequestRecord
from stratagem.testing._faults import Fault, FaultKind
from stratagem.testing._models import FunctionModel, ScriptedModel, ScriptedReply
from stratagem.testing._proxy import UsageProxy
from stratagem.testing._replies import (
    FakeReply,
    FakeUsage,
    FinishReason,
    Responder,
    echo_responder,
)

__all__ = [
    "FakeOpenAIServer",
    "FakeReply",
    "FakeUsage",
    "Fault",
    "FaultKind",
    "FinishReason",
    "FunctionModel",
    "RequestRecord",
    "Responder",
    "ScriptedModel",
    "ScriptedReply",
    "UsageProxy",
    "echo_responder",
]
