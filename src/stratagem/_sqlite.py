"""Opening stratagem's SQLite files (ledger, results) for reading only.

A plain ``sqlite3.connect`` needs to write beside the file: it creates the database when it is
missing and, for a file in WAL mode, the ``-wal`` and ``-shm`` files on the first read. So it
fails in a folder the user may only read ("unable to open database file"), and even
``mode=ro`` leaves ``-wal``/``-shm`` files behind in a folder it may write. Reading an
output folder must change nothing in it, so:

* when the file has a ``-wal`` beside it, a writer has it open (or crashed with rows not yet
  checkpointed into the main file): ``mode=ro`` reads the main file and the WAL, the latest
  committed rows; the ``-shm`` that goes with that WAL exists already;
* otherwise every committed row is in the main file, and ``immutable=1`` reads it without
  creating anything, even on a read-only file system.

If ``mode=ro`` cannot open the WAL (its ``-shm`` is missing and cannot be created on a
read-only file system), the main file alone is read with ``immutable=1``: rows still only in
that WAL are then not seen. A writer that opens the file after ``immutable=1`` did is not
noticed either; both only matter while another process writes the folder.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect_readonly"]


def connect_readonly(path: str | Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection that can only read ``path`` and creates no file beside it.

    Args:
        path: An existing SQLite file.
        timeout: Seconds to wait for a writer's lock.

    Returns:
        An open connection (autocommit); any write through it raises
        ``sqlite3.OperationalError`` ("attempt to write a readonly database").

    Raises:
        FileNotFoundError: If ``path`` is not an existing file.
        sqlite3.DatabaseError: If the file cannot be read as SQLite.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(2, "no such file", str(file))
    uri = file.resolve().as_uri()
    wal = file.with_name(file.name + "-wal")
    modes = ["mode=ro", "immutable=1"] if wal.exists() else ["immutable=1"]
    for i, mode in enumerate(modes):
        conn = sqlite3.connect(f"{uri}?{mode}", uri=True, check_same_thread=False,
                               isolation_level=None, timeout=timeout)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            if i + 1 < len(modes):
                continue  # mode=ro could not open the WAL: read the main file alone
            raise
        except BaseException:
            conn.close()
            raise
        return conn
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
