"""Fan-out: 64 (and 256) parallel solver calls against a loopback server, 200 ms per call.

The server is a minimal OpenAI-compatible chat endpoint on asyncio (HTTP/1.1 keep-alive, a
fixed reply with usage and an ``x-request-id``) in a child process on 127.0.0.1, as a real
server would be: it answers 64 concurrent requests within about 2% of its latency, so the
figures measure the client side. Everything goes through ``OpenAIBackend(base_url=...,
backend="vllm")`` and one ``ModelClient(concurrency={endpoint: 64})`` with a durable ledger.
Measured in one run, each variant interleaved with the others:

  * the baseline: one call's wall time through that client (median of sequential calls);
  * ``best_of_n(64, select="vote")`` through ``stratagem.graphs.arun`` with a budget and the
    durable ledger: as ``arun`` runs by default, without checkpoints (the headline); with a
    ``checkpoint=`` file path (a saver opened per run, as the one-line call does); and with
    one ``sqlite_checkpointer`` opened once and shared (what the ablation runner does). A
    checkpoint adds a synchronous SQLite save per superstep and the writes of every branch;
  * ``best_of_n(256)`` the same way without checkpoints (``--wide``): the wide line;
  * 64 concurrent ``client.complete`` calls without a graph, over the default ``direct``
    transport and over the SDK (``transport="aiohttp"``);
  * 64 concurrent ``chat.completions.create`` calls of the bare ``openai`` SDK, over aiohttp
    (stratagem's transport) and over the SDK's default httpx2 transport: what the SDK and
    this machine manage without stratagem;
  * 64 concurrent requests written by hand to kept-alive sockets: the server's own floor.

Each figure is wall time divided by the baseline; 1.0 is the limit. On an asyncio client,
the CPU time of every call adds to the wall time of a fan-out (the requests go out after all
branches have prepared theirs, the replies are processed one after another), so the excess
over 1.0 is roughly the CPU time of 64 calls divided by the latency: the printed CPU
milliseconds per branch say where it goes.

Usage:
    python bench/fanout.py [--n 64] [--wide 256] [--latency 0.2] [--repeats 7]

Targets (issue 18): 64-way ``best_of_n`` <= 1.10x one call's latency without checkpoints,
<= 1.20x with a shared saver; 256-way <= 1.30x; the client path (client + budget + ledger +
log event: ``client.complete``'s CPU per call above the raw sockets') <= 0.5 ms, and at least
5x less than the bare SDK's CPU per call in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai

from stratagem.agents import ModelClient, OpenAIBackend
from stratagem.budgets import Budget, LedgerStore, TokenLedger
from stratagem.graphs import RunContext, arun, best_of_n, sqlite_checkpointer
from stratagem.logging import configure_logging

TARGET = 1.10
TARGET_SHARED = 1.20
TARGET_WIDE = 1.30
TARGET_PATH_MS = 0.5
REPLY = "A word that fits.\nAnswer: cat"
PROMPT = "Write one English word that starts with 'c'."
MESSAGES = [{"role": "user", "content": PROMPT}]


# -- the loopback server (child process) ---------------------------------------------------------

def _completion(request: bytes, number: int) -> bytes:
    body = json.loads(request) if request else {}
    return json.dumps({
        "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }).encode()


async def _serve(port: Any, latency: float) -> None:
    numbers = itertools.count(1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # one request after another on a kept-alive connection
                head = await reader.readuntil(b"\r\n\r\n")
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif name.strip().lower() == b"connection":
                        close = value.strip().lower() == b"close"
                request = await reader.readexactly(length)
                await asyncio.sleep(latency)
                number = next(numbers)
                out = _completion(request, number)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"x-request-id: req-%d\r\nContent-Length: %d\r\n\r\n"
                             % (number, len(out)) + out)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve(port: Any, latency: float) -> None:
    """The child process: serve until killed."""
    asyncio.run(_serve(port, latency))


# -- measurement ----------------------------------------------------------------------------------

async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each of ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        await call()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


async def measure(url: str, port: int, n: int, wide: int, repeats: int,
                  folder: Path) -> dict[str, list[tuple[float, float]]]:
    backend = OpenAIBackend("fake-model", base_url=url, backend="vllm")
    store = LedgerStore(folder / "ledger.sqlite")
    limit = {backend.endpoint: max(n, wide)}
    client = ModelClient(backend, ledger=TokenLedger(store), concurrency=limit)
    sdk_backend = OpenAIBackend("fake-model", base_url=url, backend="vllm", transport="aiohttp")
    over_sdk = ModelClient(sdk_backend, ledger=TokenLedger(LedgerStore(folder / "sdk.sqlite")),
                           concurrency={sdk_backend.endpoint: n})
    sdks = {transport: openai.AsyncOpenAI(
        base_url=url, api_key="not-needed", max_retries=0,
        http_client=openai.DefaultAioHttpClient() if transport == "aiohttp" else None)
        for transport in ("aiohttp", "httpx2")}
    graphs = {k: best_of_n(k, select="vote") for k in {n, wide}}

    async def one() -> None:
        await client.complete(MESSAGES, role="solver", max_output=64)

    async def one_over_sdk() -> None:
        await over_sdk.complete(MESSAGES, role="solver", max_output=64)

    async def graph_run(checkpoint: Any, k: int = n) -> None:
        budget = Budget(total=k * 400, roles={"solver": k * 320, "judge": k * 80})
        ctx = RunContext(client=client, budget=budget)
        result = await arun(graphs[k], PROMPT, context=ctx, checkpoint=checkpoint,
                            max_concurrency=k)
        assert len(result.state["candidates"]) == k, result.notes[:3]

    def fan_sdk(transport: str) -> Callable[[], Awaitable[Any]]:
        sdk = sdks[transport]

        async def sdk_one() -> None:
            await sdk.chat.completions.create(model="fake-model", messages=MESSAGES,  # type: ignore[arg-type]
                                              max_tokens=64)

        return lambda: asyncio.gather(*(sdk_one() for _ in range(n)))

    body = json.dumps({"model": "fake-model", "messages": MESSAGES, "max_tokens": 64}).encode()
    raw_request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                   ).encode() + body
    sockets = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]

    async def raw_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request written to a kept-alive socket by hand: next to no client cost."""
        writer.write(raw_request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
        assert reply["usage"]["completion_tokens"] == 9

    async with sqlite_checkpointer(folder / "shared.sqlite") as saver:
        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "best_of_n, checkpoint=path": lambda: graph_run(folder / "checkpoints.sqlite"),
            "best_of_n, shared saver": lambda: graph_run(saver),
            "best_of_n, no checkpoint": lambda: graph_run(None),
            "best_of_n(wide), no checkpoint": lambda: graph_run(None, wide),
            "client.complete x n": lambda: asyncio.gather(*(one() for _ in range(n))),
            "client.complete (SDK) x n": lambda: asyncio.gather(
                *(one_over_sdk() for _ in range(n))),
            "openai SDK (aiohttp) x n": fan_sdk("aiohttp"),
            "openai SDK (httpx2) x n": fan_sdk("httpx2"),
            "raw kept-alive sockets x n": lambda: asyncio.gather(
                *(raw_one(r, w) for r, w in sockets)),
        }
        for call in (one, *variants.values(), *variants.values()):  # warm-up: pools, caches
            await call()
        times = {"one call": await timed(one, max(10, repeats))}
        for _ in range(repeats):  # interleaved, one of each per round
            for name, call in variants.items():
                times.setdefault(name, []).extend(await timed(call, 1))
    for _, writer in sockets:
        writer.close()
    await client.aclose()
    await over_sdk.aclose()
    for sdk in sdks.values():
        await sdk.close()
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="parallel calls")
    parser.add_argument("--wide", type=int, default=256, help="parallel calls of the wide line")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per call (s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed fan-outs per variant")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="leave the import-time heap to the garbage collector (the CLI "
                             "freezes it; see stratagem.cli)")
    args = parser.parse_args()
    if not args.no_gc_freeze:
        gc.freeze()  # as the stratagem CLI does after its imports

    configure_logging(level="warning")
    ctx = mp.get_context("spawn")
    ports: Any = ctx.Queue()
    child = ctx.Process(target=serve, args=(ports, args.latency), daemon=True)
    child.start()
    try:
        port = ports.get(timeout=60)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as tmp:
            times = asyncio.run(measure(url, port, args.n, args.wide, args.repeats, Path(tmp)))
    finally:
        child.kill()
        child.join(timeout=10)

    one = statistics.median(w for w, _ in times["one call"])
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; asyncio "
          f"loopback server in a child process, latency {args.latency * 1000:.0f} ms; import-time "
          f"heap {'left to the GC' if args.no_gc_freeze else 'frozen (gc.freeze)'}")
    print(f"one call through ModelClient: median {one * 1000:.1f} ms "
          f"(min {min(w for w, _ in times['one call']) * 1000:.1f}, "
          f"{len(times['one call'])} calls)")
    ratios, cpus = {}, {}
    for name, ts in times.items():
        if name == "one call":
            continue
        walls = [w for w, _ in ts]
        med = statistics.median(walls)
        branches = args.wide if "wide" in name else args.n
        cpu = cpus[name] = statistics.median(c for _, c in ts) / branches * 1000
        ratios[name] = med / one
        label = name.replace("(wide)", f"({args.wide})").replace(" x n", "")
        print(f"{branches:>3} x {label:<28} median {med * 1000:7.1f} ms  "
              f"min {min(walls) * 1000:7.1f}  max {max(walls) * 1000:7.1f}  "
              f"CPU {cpu:5.2f} ms/branch  -> {med / one:.2f}x one call")
    head = ratios["best_of_n, no checkpoint"]
    shared = ratios["best_of_n, shared saver"]
    wide = ratios["best_of_n(wide), no checkpoint"]
    path = cpus["client.complete x n"] - cpus["raw kept-alive sockets x n"]
    sdk = cpus["openai SDK (aiohttp) x n"]

    def verdict(value: float, target: float) -> str:
        return f"{'meets' if value <= target else 'MISSES'} <= {target}"

    print(f"SUMMARY fanout: best_of_n({args.n}) through stratagem (budget, durable ledger) took "
          f"{head:.2f}x one call's latency ({verdict(head, TARGET)}; limit 1.0); with a shared "
          f"saver {shared:.2f}x ({verdict(shared, TARGET_SHARED)}), checkpoint=path "
          f"{ratios['best_of_n, checkpoint=path']:.2f}x; best_of_n({args.wide}) {wide:.2f}x "
          f"({verdict(wide, TARGET_WIDE)}); client path {path:.2f} ms CPU per call "
          f"({verdict(path, TARGET_PATH_MS)}), the bare SDK {sdk:.2f} ms ({sdk / path:.1f}x; "
          f"target >= 5x); same run: bare openai SDK "
          f"{ratios['openai SDK (aiohttp) x n']:.2f}x over aiohttp and "
          f"{ratios['openai SDK (httpx2) x n']:.2f}x over httpx2, raw sockets "
          f"{ratios['raw kept-alive sockets x n']:.2f}x")


if __name__ == "__main__":
    main()
