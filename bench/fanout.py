"""Fan-out: 64 parallel solver calls against a loopback server with 200 ms latency per call.

A :class:`~stratagem.testing.FakeOpenAIServer` (``latency=0.2``) runs in a child process on
127.0.0.1, as a real server would (in-process, its handler threads would compete with the
client for the GIL). Everything goes through ``OpenAIBackend(base_url=..., backend="vllm")``
and one ``ModelClient(concurrency={endpoint: 64})`` with a durable ledger. Measured in one run:

  * the baseline: one call's wall time through that client (median of sequential calls);
  * ``best_of_n(64, select="vote")`` through ``stratagem.graphs.arun`` with a budget and a
    ``checkpoint=`` file (the headline), and without the checkpoint;
  * 64 concurrent ``client.complete`` calls without a graph;
  * 64 concurrent calls of the bare ``openai`` SDK: what the SDK, the loopback server and this
    machine manage without stratagem;
  * 64 concurrent requests written to raw sockets: what the fake server itself manages (its
    handler threads share one GIL), with next to no client cost.

Each figure is wall time divided by the baseline; 1.0 is the limit. The fake server's listen
backlog is raised to at least ``--backlog`` in its process: the stdlib default (5) drops
connection attempts of a 64-way burst, which then wait for TCP's 1 s SYN retry (reported;
run with ``--backlog 0`` to see the stock behaviour).

Usage:
    python bench/fanout.py [--n 64] [--latency 0.2] [--repeats 7] [--backlog 128]

Target: <= 1.25x one call's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai

from stratagem.agents import ModelClient, OpenAIBackend
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.graphs import RunContext, arun, best_of_n
from stratagem.logging import configure_logging
from stratagem.testing import FakeOpenAIServer, _fake_server

TARGET = 1.25
REPLY = "A word that fits.\nAnswer: cat"
MESSAGES = [{"role": "user", "content": "Write one English word that starts with 'c'."}]


def _reply(body: dict[str, Any]) -> str:
    return REPLY


def serve(urls: Any, stop: Any, latency: float, backlog: int) -> None:
    """The child process: a fake server until ``stop`` is set."""
    # Workaround, not a fix: the server class inherits socketserver's listen backlog of 5.
    server_class: Any = _fake_server._HTTPServer
    server_class.request_queue_size = max(server_class.request_queue_size, backlog)
    with FakeOpenAIServer(_reply, latency=latency) as srv:
        urls.put((srv.base_url, server_class.request_queue_size))
        stop.wait()


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def measure(url: str, n: int, repeats: int, folder: Path) -> dict[str, list[float]]:
    backend = OpenAIBackend("fake-model", base_url=url, backend="vllm")
    store = LedgerStore(folder / "ledger.sqlite")
    client = ModelClient(backend, ledger=TokenLedger(store), concurrency={backend.endpoint: n})
    # Two retries (the SDK default) so a dropped connection (see --backlog) costs time, not
    # the whole benchmark.
    sdk = openai.AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=2)
    graph = best_of_n(n, select="vote")

    async def one() -> None:
        await client.complete(MESSAGES, role="solver", max_output=64)

    async def sdk_one() -> None:
        await sdk.chat.completions.create(model="fake-model", messages=MESSAGES,  # type: ignore[arg-type]
                                          max_tokens=64)

    async def graph_run(checkpoint: Path | None) -> None:
        budget = Budget(total=n * 400, roles={"solver": n * 320, "judge": n * 80})
        ctx = RunContext(client=client, budget=budget)
        result = await arun(graph, "Write one English word that starts with 'c'.", context=ctx,
                            checkpoint=checkpoint, max_concurrency=n)
        assert len(result.state["candidates"]) == n, result.notes[:3]

    split = urlsplit(url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    body = json.dumps({"model": "fake-model", "messages": MESSAGES, "max_tokens": 64}).encode()
    raw_request = (f"POST {split.path}/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                   ).encode() + body

    async def raw_one() -> None:
        """One request written to a socket by hand: (almost) no client cost at all."""
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(raw_request)
        await writer.drain()
        reply = await reader.read()  # the server closes the connection after each reply
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:80]

    async def fan_raw() -> None:
        await asyncio.gather(*(raw_one() for _ in range(n)))

    async def fan_calls() -> None:
        await asyncio.gather(*(one() for _ in range(n)))

    async def fan_sdk() -> None:
        await asyncio.gather(*(sdk_one() for _ in range(n)))

    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "best_of_n, checkpoint": lambda: graph_run(folder / "checkpoints.sqlite"),
        "best_of_n, no checkpoint": lambda: graph_run(None),
        "client.complete x n": fan_calls,
        "openai SDK x n": fan_sdk,
        "raw HTTP sockets x n": fan_raw,
    }
    for call in (one, sdk_one, *variants.values()):  # warm-up: connections, tiktoken, SQLite
        await call()
    times = {"one call": await timed(one, max(10, repeats))}
    for _ in range(repeats):  # interleaved, one of each per round
        for name, call in variants.items():
            times.setdefault(name, []).extend(await timed(call, 1))
    await client.aclose()
    await sdk.close()
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="parallel calls")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per call (s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed fan-outs per variant")
    parser.add_argument("--backlog", type=int, default=128,
                        help="raise the fake server's listen backlog to at least this")
    args = parser.parse_args()

    configure_logging(level="warning")
    ctx = mp.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=serve, args=(urls, stop, args.latency, args.backlog), daemon=True)
    child.start()
    try:
        url, backlog = urls.get(timeout=60)
        with tempfile.TemporaryDirectory() as tmp:
            times = asyncio.run(measure(url, args.n, args.repeats, Path(tmp)))
    finally:
        stop.set()
        child.join(timeout=10)

    one = statistics.median(times["one call"])
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; fake server "
          f"in a child process, listen backlog {backlog}, latency {args.latency * 1000:.0f} ms")
    print(f"one call through ModelClient: median {one * 1000:.1f} ms "
          f"(min {min(times['one call']) * 1000:.1f}, {len(times['one call'])} calls)")
    for name, ts in times.items():
        if name == "one call":
            continue
        med = statistics.median(ts)
        print(f"{args.n:>3} x {name:<26} median {med * 1000:7.1f} ms  "
              f"min {min(ts) * 1000:7.1f} ms  max {max(ts) * 1000:7.1f} ms  "
              f"-> {med / one:.2f}x one call")
    head = statistics.median(times["best_of_n, checkpoint"]) / one
    sdk = statistics.median(times["openai SDK x n"]) / one
    raw = statistics.median(times["raw HTTP sockets x n"]) / one
    verdict = "meets" if head <= TARGET else "MISSES"
    print(f"SUMMARY fanout: best_of_n({args.n}) through stratagem (budget, durable ledger, "
          f"checkpoint) took {head:.2f}x one call's latency ({verdict} target <= {TARGET}; "
          f"limit 1.0; same run: bare openai SDK {sdk:.2f}x, raw sockets {raw:.2f}x)")


if __name__ == "__main__":
    main()
