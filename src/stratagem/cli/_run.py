"""``stratagem run``: one task through one topology (the same ``run_task`` the ablation
runner uses)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from stratagem._redact import redact
from stratagem.ablation import MAX_BUDGET
from stratagem.agents import EndpointConfig, ModelClient, build_backend
from stratagem.budgets import LedgerStore, Pricing, TokenLedger
from stratagem.cli._common import console, parse_params, state
from stratagem.errors import ConfigError, RunError
from stratagem.graphs import RunResult, RunSpec, arun_task
from stratagem.report import audit_table, transfers_table
from stratagem.tasks import Task


def run_command(
    task: Annotated[str, typer.Argument(help="The task text.")],
    topology: Annotated[str, typer.Option("--topology", "-t", help="Topology name.")] = "single",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Topology parameter KEY=VALUE.")
    ] = None,
    budget: Annotated[int, typer.Option(help="Token budget of the run.")] = 4000,
    split: Annotated[
        list[str] | None, typer.Option(help="Role share ROLE=FRACTION (default per topology).")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="local, simulated, openai, vllm, ollama, llamacpp, generic.")
    ] = "local",
    model: Annotated[str | None, typer.Option(help="Model name (remote backends).")] = None,
    base_url: Annotated[str | None, typer.Option(help="Endpoint URL.")] = None,
    cap_field: Annotated[
        str | None, typer.Option(help="Output-cap field this server honours: max_tokens or "
                                      "max_completion_tokens (default per backend).")
    ] = None,
    reallocation: Annotated[
        str, typer.Option(help="none or judge_feedback.")
    ] = "none",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    ledger: Annotated[
        Path | None, typer.Option(help="Append the calls to this ledger file.")
    ] = None,
) -> None:
    """Run one task through one topology; print the answer, spend per role and transfers."""
    if not task.strip():
        raise ConfigError("the task is empty: pass its text, e.g. stratagem run 'What is 17 * 23?'")
    if not 1 <= budget <= MAX_BUDGET:
        raise ConfigError(f"--budget must be a number of tokens from 1 to {MAX_BUDGET:,}, "
                          f"got {budget}")
    if reallocation not in ("none", "judge_feedback"):
        raise ConfigError(f"--reallocation must be none or judge_feedback, got {reallocation!r}")
    try:
        endpoint = EndpointConfig(backend=backend, model=model, base_url=base_url,  # type: ignore[arg-type]
                                  cap_field=cap_field)  # type: ignore[arg-type]
    except ValueError as exc:
        error = exc.errors()[0]  # type: ignore[attr-defined]
        where = ".".join(str(p) for p in error.get("loc", ())) or "endpoint"
        raise ConfigError(f"bad endpoint option --{where.replace('_', '-')}: "
                          f"{error['msg']}") from exc
    shares = {role: share for role, share in parse_params(split, what="--split").items()}
    spec = RunSpec(task, topology=topology, params=parse_params(param), budget=budget,
                   split=shares or None, policy=reallocation, seed=seed,
                   labels={"topology": topology})
    graph = spec.build_graph()  # every check before a file is touched or a server started
    try:
        spec.make_budget()
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from exc  # "--split solver='most': ..."
    # The backend before the ledger file: a refused endpoint creates no file.
    chat = build_backend(endpoint, [Task(id="cli", suite="cli", question=task, answer="")])
    store = LedgerStore(ledger) if ledger else LedgerStore()
    with store:
        book = TokenLedger(store)
        client = ModelClient(chat, ledger=book, pricing=Pricing.default())
        result = _run(spec, client, graph)
        console.print(f"answer: {redact(result.answer) or '(none)'}", highlight=False,
                      markup=False)
        console.print(f"stop reason: {redact(result.stop_reason)}", highlight=False,
                      markup=False)
        if not state.quiet:
            simulated = client.backend_for("solver").name == "simulated"
            console.print(audit_table(result.by_role, by="role", simulated=simulated))
            if result.transfers:
                console.print(transfers_table(result.transfers, simulated=simulated))
            console.print(f"billed {result.billed.total_tokens} tokens, accepted "
                          f"{sum(result.accepted_tokens.values())}, waste {result.waste_tokens}; "
                          f"run id {result.run_id}", highlight=False)
        if not result.answer and result.stop_reason.startswith("model failed"):
            raise RunError(result.stop_reason)


def _run(spec: RunSpec, client: ModelClient, graph: object) -> RunResult:
    async def once() -> RunResult:
        try:
            return await arun_task(spec, client, graph=graph)
        finally:
            await client.aclose()

    return asyncio.run(once())
