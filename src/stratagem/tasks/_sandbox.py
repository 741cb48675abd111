"""Running generated Python in a child process with limits: best effort, **not** a sandbox.

The child is ``python -I`` in a fresh temporary directory with a minimal environment, its own
process group and resource limits (address space, CPU time, file size, no core dumps, and no
new processes or threads where the OS enforces that: Linux does not for root). Network access
is refused by an audit hook and by replacing ``socket.socket.connect`` and
``socket.create_connection``. The wall-clock timeout kills the whole process group. POSIX only.

What this does not stop: code that kills or signals other processes of the same user, reads
or writes files the user can reach, escapes its process group with ``setsid``, or uses
``ctypes`` to get round the Python-level guards. Run untrusted code in a container or VM.

The limits are set by a small preamble inside the child rather than in ``preexec_fn``:
``preexec_fn`` is not safe when the parent has threads (checks run in worker threads, see
``Suite.averifier``), and lowering both soft and hard limits in the child is just as binding.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExecutionResult", "run_python"]

_STDERR_TAIL = 4000

# Runs first in the child. Limits lower soft and hard values alike, so the program cannot
# raise them again. The program only counts as finished if the marker file gets written
# after it returns: `sys.exit(0)` or `os._exit(0)` halfway through is not a pass.
_PREAMBLE = """\
import resource, runpy, socket, sys

def _limit(name, value):
    which = getattr(resource, name, None)
    if which is None:
        return
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass

_limit("RLIMIT_AS", {memory})
_limit("RLIMIT_CPU", {cpu})
_limit("RLIMIT_FSIZE", {fsize})
_limit("RLIMIT_CORE", 0)
_limit("RLIMIT_NPROC", 0)

_NET_EVENTS = frozenset({{
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr",
}})

def _no_network(event, args):
    if event in _NET_EVENTS:
        raise PermissionError("network access is disabled here (" + event + ")")

sys.addaudithook(_no_network)

def _refuse(*args, **kwargs):
    raise PermissionError("network access is disabled here")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
del _limit, _refuse

runpy.run_path("program.py", run_name="__main__")
with open({marker!r}, "w") as _done:
    _done.write("done")
"""


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """How a program run by :func:`run_python` ended.

    Attributes:
        passed: It ran to its end and exited with status 0, within the limits.
        returncode: The exit status (negative: killed by that signal), ``None`` if it could
            not be started.
        timed_out: It was killed for running past the wall-clock timeout.
        stderr: The last few thousand characters it wrote to standard error.
        seconds: Wall-clock time it took.
    """

    passed: bool
    returncode: int | None
    timed_out: bool
    stderr: str
    seconds: float


def run_python(
    source: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    output_mb: int = 16,
) -> ExecutionResult:
    """Run ``source`` as a Python program in a child process with limits (see the module
    docstring for what is and is not guarded). Never raises for anything the program does.

    Standard output is discarded (so a flood of it costs nothing but time); standard error is
    kept up to ``output_mb`` and its tail returned.

    Args:
        source: The program.
        timeout: Wall-clock seconds before the process group is killed; the CPU-time limit
            is this plus one second, rounded up.
        memory_mb: Address-space limit, in MiB: more raises ``MemoryError`` in the program.
        output_mb: Largest file (standard error included) the program may write, in MiB.

    Example:
        >>> run_python("assert 1 + 1 == 2").passed, run_python("while True: pass",
        ...                                                    timeout=0.5).timed_out
        (True, True)
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(
        prefix="stratagem-run-", ignore_cleanup_errors=True
    ) as tmp:
        work = Path(tmp)
        marker = work / ".finished"
        (work / "program.py").write_text(source, encoding="utf-8")
        (work / "main.py").write_text(
            _PREAMBLE.format(
                memory=memory_mb * 1024 * 1024, cpu=math.ceil(timeout) + 1,
                fsize=output_mb * 1024 * 1024, marker=str(marker),
            ),
            encoding="utf-8",
        )
        env = {
            "PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
        }
        stderr_path = work / ".stderr"
        timed_out = False
        with stderr_path.open("wb") as stderr:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "main.py"], cwd=tmp, env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            except OSError as exc:
                return ExecutionResult(False, None, False, f"could not start python: {exc}",
                                       time.monotonic() - started)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # Also ends any children it left behind, on success or not.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        tail = _tail(stderr_path)
        passed = not timed_out and proc.returncode == 0 and marker.exists()
        return ExecutionResult(passed, proc.returncode, timed_out, tail,
                               time.monotonic() - started)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _STDERR_TAIL))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
