"""The checkpoint saver: WAL + synchronous pragmas, group commit of branch writes, redaction."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.types import Send

from stratagem.graphs import RedactingSerializer, redact_state, sqlite_checkpointer


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


SECRET = "Bearer zq7-checkpoint-secret-0f3e9a"


def test_checkpoints_and_pending_writes_are_redacted_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "ck.sqlite"

    async def go() -> Any:
        async with sqlite_checkpointer(path) as saver:
            assert isinstance(saver.serde, RedactingSerializer)
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"answer": f"the header was {SECRET}", "round": 3}
            config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
            saved = await saver.aput(config, checkpoint, {}, {})
            await saver.aput_writes(saved, [("candidates", [{"text": SECRET, "round": 1}]),
                                            ("branch", Send("solver", {"previous": SECRET}))],
                                    task_id="task-1")
            return await saver.aget_tuple(saved)

    loaded = asyncio.run(go())
    assert loaded.checkpoint["channel_values"] == {"answer": "the header was [REDACTED]",
                                                   "round": 3}
    writes = {channel: value for _, channel, value in loaded.pending_writes}
    assert writes["candidates"] == [{"text": "[REDACTED]", "round": 1}]
    assert writes["branch"] == Send("solver", {"previous": "[REDACTED]"})
    for file in tmp_path.iterdir():  # the database and its WAL, byte for byte
        assert b"zq7-checkpoint-secret" not in file.read_bytes(), file.name


def test_redact_state_keeps_shapes_types_and_unchanged_objects() -> None:
    @dataclasses.dataclass(frozen=True)
    class Box:
        text: str
        n: int

    class Point(NamedTuple):
        label: str
        x: int

    state = {"keep": ["plain", 1, None, b"bytes"], "box": Box(SECRET, 2),
             "point": Point(SECRET, 5), "tags": (SECRET,)}
    out = redact_state(state)
    assert out["keep"] is state["keep"]
    assert out["box"] == Box("[REDACTED]", 2)
    assert out["point"] == Point("[REDACTED]", 5) and isinstance(out["point"], Point)
    assert out["tags"] == ("[REDACTED]",)
    clean = {"a": ["b", {"c": 1}]}
    assert redact_state(clean) is clean


def test_the_redacting_serializer_keeps_langgraphs_msgpack_allowlist() -> None:
    # LangGraph narrows a saver's serializer with an allowlist when it compiles a graph; a
    # plain wrapper would lose it (and LangGraph would log that it cannot apply one).
    narrowed = RedactingSerializer().with_msgpack_allowlist([("some.module", "Thing")])
    assert isinstance(narrowed, RedactingSerializer)
    assert narrowed.loads_typed(narrowed.dumps_typed([SECRET])) == ["[REDACTED]"]


def test_a_checkpoint_without_secrets_is_written_as_langgraph_writes_it() -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from stratagem.graphs import RedactingSerializer

    clean = {"task": "What is 6*7?", "candidates": [{"answer": "42", "text": "Answer: 42"}],
             "accepted_tokens": {"solver": 12}}
    assert RedactingSerializer().dumps_typed(clean) == JsonPlusSerializer().dumps_typed(clean)
    leaky = {**clean, "notes": ["server said: Authorization: Bearer abcdefgh12345678"]}
    back = RedactingSerializer().loads_typed(RedactingSerializer().dumps_typed(leaky))
    assert back["notes"] == ["server said: Authorization: [REDACTED]"]
