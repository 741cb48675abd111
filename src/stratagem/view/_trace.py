"""One run as a trace tree: its graph nodes, each node's attempts, their text, its budget.

The ledger says what every attempt cost; the checkpoints (for a durable run) say what each
graph task was given and what it wrote. They meet at the LangGraph task id, which every
ledger row carries (``task_id``) and every checkpoint write is keyed by. A task pulled by an
edge is named in its ``task_path`` (``~__pregel_pull, solve``); one started by a ``Send`` is
numbered there (``~__pregel_push, 3, ...``) and named by the ``Send`` at that index. Without
checkpoints, nodes come from the ledger rows' ``node`` field alone, with no text.

Every piece of text is redacted (:func:`stratagem._redact.redact_value`) before it leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from stratagem._redact import redact_value

__all__ = ["build_trace"]

_TEXT_LIMIT = 4000
_HIDDEN_CHANNELS = ("accepted_calls", "accepted_tokens", "__pregel_tasks", "run_id", "task_id")
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
_OPTIONAL = ("cached_tokens", "reasoning_tokens")
_serde = JsonPlusSerializer()


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-safe data, long strings cut (checkpoints hold any Python value)."""
    if isinstance(value, str):
        return value if len(value) <= _TEXT_LIMIT else value[:_TEXT_LIMIT] + " [...]"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 6:
        return repr(value)[:200]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v, depth + 1) for v in value]
    node, arg = getattr(value, "node", None), getattr(value, "arg", None)
    if isinstance(node, str):  # a langgraph Send
        return {"send": node, "arg": _plain(arg, depth + 1)}
    return repr(value)[:_TEXT_LIMIT]


def _decode(kind: str, blob: bytes) -> Any:
    if kind == "null":
        return None
    try:
        return _serde.loads_typed((kind, blob))
    except Exception as exc:  # one unreadable write must not hide the whole run
        return f"<unreadable checkpoint value: {type(exc).__name__}>"


def _tasks(writes: Sequence[tuple[str, str, int, str, str, bytes]]) -> list[dict[str, Any]]:
    """The run's graph tasks in the order they first wrote, with their input and output."""
    sends: list[Any] = []  # every Send, in the order written (push tasks index into them)
    tasks: dict[str, dict[str, Any]] = {}
    for task_id, path, _idx, channel, kind, blob in writes:
        task = tasks.setdefault(task_id, {"task_id": task_id, "path": path, "input": None,
                                          "output": {}})
        value = _decode(kind, blob)
        if channel == "__pregel_tasks":
            sends.append(value)
        elif not channel.startswith("branch:") and channel not in _HIDDEN_CHANNELS:
            task["output"][channel] = _plain(redact_value(value))
        if channel == "accepted_calls" and isinstance(value, list):
            task.setdefault("accepted", []).extend(str(v) for v in value)
    out = []
    for task in tasks.values():
        parts = [p.strip() for p in task.pop("path").split(",")]
        if parts[0] == "~__pregel_push" and len(parts) > 1 and parts[1].isdigit() and \
                int(parts[1]) < len(sends):
            send = _plain(redact_value(sends[int(parts[1])]))
            task["node"] = send.get("send", "?") if isinstance(send, dict) else "?"
            task["input"] = send.get("arg") if isinstance(send, dict) else None
        else:
            task["node"] = parts[-1] if len(parts) > 1 else parts[0]
        if task["node"] == "__start__":
            task["input"] = task["output"].get("task")
        out.append(task)
    # A task pulled by an edge reads the graph state, whose text is the run's task.
    start = next((t["input"] for t in out if t["node"] == "__start__"), None)
    for task in out:
        if task["input"] is None:
            task["input"] = start
    return out


def _reply(output: Mapping[str, Any]) -> str | None:
    """The model's text among a task's writes: a candidate's reply, a plan, a verdict."""
    candidates = output.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return "\n---\n".join(str(c.get("text", "")) for c in candidates)
    for key in ("answer_text", "feedback", "plan", "subtasks", "verdicts"):
        if output.get(key):
            value = output[key]
            return value if isinstance(value, str) else None
    return None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _budget(record: Mapping[str, Any], calls: Sequence[Mapping[str, Any]],
            transfers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Billed tokens over the run's time (each call counted when it ended), and transfers."""
    times = [_time(c["started_at"]) for c in calls] + [_time(t["at"]) for t in transfers]
    start = min(times, default=datetime.now())
    ends = sorted((_time(c["started_at"]) + timedelta(seconds=c["latency_s"] or 0.0),
                   c["prompt_tokens"] + c["completion_tokens"], c["role"]) for c in calls)
    spent, points = 0, [{"t": 0.0, "spent": 0}]
    for end, tokens, role in ends:
        spent += tokens
        points.append({"t": (end - start).total_seconds(), "spent": spent, "role": role})
    moves = [{"t": max(0.0, (_time(t["at"]) - start).total_seconds()), "from": t["from_role"],
              "to": t["to_role"], "tokens": t["tokens"], "reason": redact_value(t["reason"]),
              "node": t["node"]} for t in transfers]
    return {"allocated": record.get("allocated"), "points": points, "transfers": moves}


def _attempt(call: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("call_id", "role", "node", "branch", "attempt", "model", "backend", *_TOKEN_FIELDS,
            "cost_usd", "latency_s", "usage_source", "status", "error", "started_at")
    out = {k: redact_value(call[k], k) for k in keep}
    out["cap_sent"] = call.get("cap_sent")  # ledger schema 2: the output cap of a 'bound' row
    out["total_tokens"] = call["prompt_tokens"] + call["completion_tokens"]
    return out


def _sums(attempts: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """Token sums; cached and reasoning stay ``None`` (unknown) unless some row knows them."""
    rows = list(attempts)
    sums: dict[str, int | None] = {}
    for key in ("total_tokens", *_TOKEN_FIELDS):
        known = [a[key] for a in rows if a[key] is not None]
        sums[key] = sum(known) if known or key not in _OPTIONAL else None
    return sums


def build_trace(record: Mapping[str, Any], calls: Sequence[Mapping[str, Any]],
                transfers: Sequence[Mapping[str, Any]],
                writes: Sequence[tuple[str, str, int, str, str, bytes]]) -> dict[str, Any]:
    """The trace of one run, as JSON-safe data for the viewer.

    Args:
        record: The run's record (``results.sqlite``).
        calls: Its ledger rows, in the order written.
        transfers: Its budget transfers.
        writes: Its checkpoint writes (empty when it was not durable).

    Returns:
        ``run`` (the record), ``nodes`` (each graph task or ledger node in order, with its
        ``attempts`` and their ``sums``), ``totals`` (the sums over every attempt), ``budget``
        (billed tokens over time, the allocation, the transfers) and ``durable``.
    """
    attempts = [_attempt(c) for c in calls]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for call, attempt in zip(calls, attempts, strict=True):
        by_task.setdefault(str(call["task_id"]), []).append(attempt)
    nodes: list[dict[str, Any]] = []
    for task in _tasks(writes):
        own = by_task.pop(task["task_id"], [])
        reply = _reply(task["output"])
        for a in own:
            if a["status"] == "ok" and reply is not None:
                a["reply"] = reply
            if task["input"] is not None:
                a["prompt"] = task["input"]
        nodes.append({"node": task["node"], "task_id": task["task_id"], "input": task["input"],
                      "output": task["output"], "attempts": own, "sums": _sums(own)})
    # Calls with no checkpointed task (a run that was not durable, or a task that never
    # wrote): grouped by the node the ledger names, in the order they started.
    rest: dict[str, list[dict[str, Any]]] = {}
    for attempt in sorted((a for group in by_task.values() for a in group),
                          key=lambda a: str(a["started_at"])):
        rest.setdefault(str(attempt["node"]), []).append(attempt)
    nodes += [{"node": node, "task_id": None, "input": None, "output": None, "attempts": group,
               "sums": _sums(group)} for node, group in rest.items()]
    return {
        "run": dict(redact_value(dict(record))),
        "nodes": nodes,
        "totals": _sums(attempts),
        "budget": _budget(record, calls, transfers),
        "durable": bool(writes),
    }
