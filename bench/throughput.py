"""Throughput: calls per second one driver process sustains against a fast local server.

A sweep against a local server (vLLM, llama.cpp, Ollama) keeps hundreds of requests in
flight; then the driver's CPU per call, not the server, sets the pace. Here the server is
the loopback chat endpoint of ``bench/fanout.py`` with **zero latency**, in a child process,
and ``--inflight`` workers (256) call it back to back until ``--calls`` calls are done. In
one run, each variant interleaved with the others over ``--rounds`` rounds:

  * ``ModelClient.complete`` as a run makes it: ``OpenAIBackend`` (the default ``direct``
    transport), a budget, a durable ledger file with its write-ahead intents and group
    commits, the ``llm.call`` event (at the warning level: not written);
  * the same client over the OpenAI SDK (``transport="aiohttp"``);
  * the bare ``openai`` SDK's ``chat.completions.create`` over aiohttp, no stratagem;
  * bare aiohttp posting the JSON body and parsing the reply: the floor of any aiohttp
    client, so ``stratagem - aiohttp`` is what the client path itself costs per call.

Each figure is the median over rounds of calls/s (wall) and CPU ms per call (this
process's CPU time: the server's is its own). The machine's load is printed first.

Usage:
    python bench/throughput.py [--calls 3000] [--inflight 256] [--rounds 3]

Targets (issue 18): >= 2,000 calls/s on 2 cores; the client path (client + budget + ledger
+ log event, above the transport) <= 0.5 ms CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
from fanout import MESSAGES, serve  # (bench/ is on the path when this file runs)

from stratagem.agents import ModelClient, OpenAIBackend
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.logging import configure_logging

TARGET_CALLS_S = 2000.0
TARGET_PATH_MS = 0.5


async def sustain(call: Callable[[], Awaitable[Any]], calls: int,
                  inflight: int) -> tuple[float, float]:
    """(calls/s, CPU ms per call) of ``calls`` calls made by ``inflight`` workers."""
    per_worker, extra = divmod(calls, inflight)

    async def worker(n: int) -> None:
        for _ in range(n):
            await call()

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(per_worker + (i < extra)) for i in range(inflight)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return calls / wall, cpu / calls * 1000


async def measure(url: str, calls: int, inflight: int, rounds: int,
                  folder: Path) -> dict[str, list[tuple[float, float]]]:
    clients = {}
    stores = []
    for transport in ("direct", "aiohttp"):
        backend = OpenAIBackend("fake-model", base_url=url, backend="vllm", transport=transport)
        store = LedgerStore(folder / f"ledger-{transport}.sqlite")
        stores.append(store)
        clients[transport] = ModelClient(
            backend, ledger=TokenLedger(store), budget=Budget(total=10**12),
            concurrency={backend.endpoint: inflight})
    sdk = openai.AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0,
                             http_client=openai.DefaultAioHttpClient())
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Authorization": "Bearer not-needed", "Content-Type": "application/json"}

    def through(client: ModelClient) -> Callable[[], Awaitable[Any]]:
        async def call() -> None:
            await client.complete(MESSAGES, role="solver", max_output=64)
        return call

    async def bare_sdk() -> None:
        await sdk.chat.completions.create(model="fake-model", messages=MESSAGES,  # type: ignore[arg-type]
                                          max_tokens=64)

    async def bare_aiohttp() -> None:
        body = json.dumps({"model": "fake-model", "messages": MESSAGES,
                           "max_tokens": 64}).encode()
        async with session.post(f"{url}/chat/completions", data=body,
                                headers=headers) as response:
            reply = json.loads(await response.read())
        assert reply["usage"]["completion_tokens"] == 9

    variants = {
        "stratagem (direct transport)": through(clients["direct"]),
        "stratagem (SDK transport)": through(clients["aiohttp"]),
        "bare openai SDK (aiohttp)": bare_sdk,
        "bare aiohttp": bare_aiohttp,
    }
    for call in variants.values():  # warm-up: connections, tokenizer, caches
        await sustain(call, inflight * 2, inflight)
    times: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, call in variants.items():
            gc.collect()
            times.setdefault(name, []).append(await sustain(call, calls, inflight))
    for client in clients.values():
        await client.aclose()
    await sdk.close()
    await session.close()
    rows = sum(len(s.entries()) for s in stores)
    expected = 2 * (inflight * 2 + calls * rounds)
    assert rows == expected, f"{rows} ledger rows, expected {expected}"
    for store in stores:
        store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and variant")
    parser.add_argument("--inflight", type=int, default=256, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    args = parser.parse_args()
    gc.freeze()  # as the stratagem CLI does after its imports
    configure_logging(level="warning")
    load = os.getloadavg()[0]
    ctx = mp.get_context("spawn")
    ports: Any = ctx.Queue()
    child = ctx.Process(target=serve, args=(ports, 0.0), daemon=True)
    child.start()
    try:
        port = ports.get(timeout=60)
        with tempfile.TemporaryDirectory() as tmp:
            times = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.calls,
                                        args.inflight, args.rounds, Path(tmp)))
    finally:
        child.kill()
        child.join(timeout=10)

    print(f"machine load (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after, on "
          f"{os.cpu_count()} cores; zero-latency asyncio loopback server in a child process; "
          f"{args.inflight} in flight, {args.calls} calls per round, {args.rounds} rounds")
    rate, cpu = {}, {}
    for name, ts in times.items():
        rate[name] = statistics.median(r for r, _ in ts)
        cpu[name] = statistics.median(c for _, c in ts)
        print(f"{name:<30} {rate[name]:8,.0f} calls/s (min {min(r for r, _ in ts):,.0f}, "
              f"max {max(r for r, _ in ts):,.0f})  CPU {cpu[name]:.3f} ms/call")
    ours = rate["stratagem (direct transport)"]
    path = cpu["stratagem (direct transport)"] - cpu["bare aiohttp"]
    sdk = cpu["bare openai SDK (aiohttp)"]
    print(f"SUMMARY throughput: stratagem sustained {ours:,.0f} calls/s at {args.inflight} in "
          f"flight ({'meets' if ours >= TARGET_CALLS_S else 'MISSES'} target >= "
          f"{TARGET_CALLS_S:,.0f}), {ours / rate['bare openai SDK (aiohttp)']:.2f}x the bare "
          f"openai SDK's {rate['bare openai SDK (aiohttp)']:,.0f}; CPU per call "
          f"{cpu['stratagem (direct transport)']:.3f} ms, of which the client path above "
          f"aiohttp {path:.3f} ms ({'meets' if path <= TARGET_PATH_MS else 'MISSES'} target "
          f"<= {TARGET_PATH_MS}; the bare SDK {sdk:.3f} ms, {sdk / path:.1f}x the client "
          f"path); over the SDK transport {rate['stratagem (SDK transport)']:,.0f} calls/s")


if __name__ == "__main__":
    main()
