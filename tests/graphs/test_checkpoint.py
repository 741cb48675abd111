"""The checkpoint saver: WAL + synchronous pragmas, and group commit of branch writes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from stratagem.graphs import sqlite_checkpointer


async def _checkpoint_config(saver: Any, thread: str = "t") -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    return dict(await saver.aput(config, empty_checkpoint(), {}, {}))


def test_branch_writes_finishing_together_share_commits_and_all_survive(tmp_path: Path) -> None:
    path = tmp_path / "ck.sqlite"

    async def go() -> tuple[int, int]:
        async with sqlite_checkpointer(path) as saver:
            config = await _checkpoint_config(saver)
            commits = 0
            real_commit = saver.conn.commit

            async def counting_commit() -> None:
                nonlocal commits
                commits += 1
                await real_commit()

            saver.conn.commit = counting_commit  # type: ignore[method-assign]
            await asyncio.gather(*(
                saver.aput_writes(config, [("candidates", [f"answer {i}"]), ("notes", [i])],
                                  task_id=f"task-{i:02d}")
                for i in range(64)))
            return commits, 64
        raise AssertionError("unreachable")

    commits, tasks = asyncio.run(go())
    assert 1 <= commits < tasks  # shared, not one per branch

    async def read() -> list[tuple[str, str, Any]]:
        async with sqlite_checkpointer(path) as saver:
            found = await saver.aget_tuple({"configurable": {"thread_id": "t",
                                                             "checkpoint_ns": ""}})
            assert found is not None
            return list(found.pending_writes or [])

    writes = asyncio.run(read())  # a fresh connection: what a resumed process would see
    assert len(writes) == 128
    by_task = {(task, channel): value for task, channel, value in writes}
    assert all(by_task[(f"task-{i:02d}", "candidates")] == [f"answer {i}"] for i in range(64))
    assert all(by_task[(f"task-{i:02d}", "notes")] == [i] for i in range(64))


def test_a_write_that_fails_fails_only_its_own_caller(tmp_path: Path) -> None:
    """A shared commit that fails is rolled back, then each caller's writes get their own
    transaction: the bad one fails, the others are committed (as upstream, one each)."""
    async def go() -> list[Any]:
        async with sqlite_checkpointer(tmp_path / "ck.sqlite") as saver:
            config = await _checkpoint_config(saver)
            real = saver.conn.executemany

            async def flaky(sql: str, rows: Any) -> Any:
                await real(sql, rows)  # the rows go in, then the statement "fails"
                if any(row[3] == "bad" for row in rows):
                    raise RuntimeError("disk I/O error")
                return None

            saver.conn.executemany = flaky  # type: ignore[method-assign]
            outcomes = await asyncio.gather(*(
                saver.aput_writes(config, [("candidates", [task])], task_id=task)
                for task in ("a", "bad", "c")), return_exceptions=True)
            await saver.aput_writes(config, [("candidates", ["ok"])], task_id="d")
            found = await saver.aget_tuple({"configurable": {"thread_id": "t",
                                                             "checkpoint_ns": ""}})
            assert found is not None
            return [outcomes, sorted(task for task, _, _ in found.pending_writes or [])]
        raise AssertionError("unreachable")

    outcomes, tasks = asyncio.run(go())
    assert outcomes[0] is None and outcomes[2] is None, outcomes
    assert isinstance(outcomes[1], RuntimeError)
    assert tasks == ["a", "c", "d"]  # nothing of the failed write, all of the others


def test_writes_queued_when_the_saver_closes_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "ck.sqlite"

    async def go() -> None:
        async with sqlite_checkpointer(path) as saver:
            config = await _checkpoint_config(saver)
            # queued, not awaited: the context exit must flush them
            pending = [asyncio.ensure_future(saver.aput_writes(config, [("notes", [i])],
                                                               task_id=f"t{i}"))
                       for i in range(20)]
            await asyncio.sleep(0)
        await asyncio.gather(*pending)

    asyncio.run(go())

    async def count() -> int:
        async with sqlite_checkpointer(path) as saver:
            found = await saver.aget_tuple({"configurable": {"thread_id": "t",
                                                             "checkpoint_ns": ""}})
            return len(found.pending_writes or []) if found else -1

    assert asyncio.run(count()) == 20


@pytest.mark.parametrize("synchronous,level", [("normal", 1), ("full", 2), ("off", 0)])
def test_a_checkpoint_file_is_wal_with_the_asked_fsync_level(tmp_path: Path, synchronous: str,
                                                             level: int) -> None:
    async def go() -> tuple[str, int]:
        async with sqlite_checkpointer(tmp_path / "sub" / "ck.sqlite",
                                       synchronous=synchronous) as saver:
            async with saver.conn.execute("PRAGMA journal_mode") as cur:
                mode = (await cur.fetchone())[0]  # type: ignore[index]
            async with saver.conn.execute("PRAGMA synchronous") as cur:
                fsync = (await cur.fetchone())[0]  # type: ignore[index]
        return str(mode), int(fsync)

    assert asyncio.run(go()) == ("wal", level)
