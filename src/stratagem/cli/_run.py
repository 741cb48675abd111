"""``stratagem run``: one task through one topology."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from stratagem._redact import redact
from stratagem.ablation._backends import build_backend
from stratagem.ablation._config import MAX_BUDGET, EndpointConfig
from stratagem.agents import ModelClient
from stratagem.budgets import (
    Budget,
    JudgeFeedback,
    LedgerStore,
    Pricing,
    TokenLedger,
    apportion,
)
from stratagem.cli._common import console, parse_params, state
from stratagem.errors import ConfigError, RunError
from stratagem.graphs import DEFAULT_SPLITS, TOPOLOGIES, RunContext, check_params, run
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
    reallocation: Annotated[
        str, typer.Option(help="none or judge_feedback.")
    ] = "none",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    ledger: Annotated[
        Path | None, typer.Option(help="Append the calls to this ledger file.")
    ] = None,
) -> None:
    """Run one task through one topology; print the answer, spend per role and transfers."""
    if topology not in TOPOLOGIES:
        raise ConfigError(f"unknown topology {topology!r}: use one of {', '.join(TOPOLOGIES)}")
    if not 1 <= budget <= MAX_BUDGET:
        raise ConfigError(f"--budget must be a number of tokens from 1 to {MAX_BUDGET:,}, "
                          f"got {budget}")
    if reallocation not in ("none", "judge_feedback"):
        raise ConfigError(f"--reallocation must be none or judge_feedback, got {reallocation!r}")
    try:
        endpoint = EndpointConfig(backend=backend, model=model, base_url=base_url)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"bad endpoint option: {exc.errors()[0]['msg']}") from exc  # type: ignore[attr-defined]
    graph = TOPOLOGIES[topology](**check_params(topology, parse_params(param)))
    shares: dict[str, float] = {}
    for role, share in parse_params(split, what="--split").items():
        if isinstance(share, bool) or not isinstance(share, int | float) \
                or not math.isfinite(share) or share < 0:
            raise ConfigError(f"--split {role}={share!r}: a share is a non-negative number, "
                              "e.g. --split solver=0.8")
        shares[role] = float(share)
    shares = shares or dict(DEFAULT_SPLITS[topology])
    roles = sorted(shares)
    caps = dict(zip(roles, apportion([shares[r] for r in roles], budget), strict=True))
    store = LedgerStore(ledger) if ledger else LedgerStore()
    with store:
        book = TokenLedger(store)
        sim_task = Task(id="cli", suite="cli", question=task, answer="")
        client = ModelClient(build_backend(endpoint, [sim_task]), ledger=book,
                             pricing=Pricing.default())
        ctx = RunContext(client=client, budget=Budget(total=budget, roles=caps), seed=seed,
                         policy=JudgeFeedback() if reallocation == "judge_feedback" else None,
                         labels={"topology": topology})
        result = run(graph, task, context=ctx)
        console.print(f"answer: {redact(result.answer) or '(none)'}", highlight=False,
                      markup=False)
        console.print(f"stop reason: {redact(result.stop_reason)}", highlight=False,
                      markup=False)
        if not state.quiet:
            simulated = client.backend_for("solver").name == "simulated"
            console.print(audit_table(book.group_by("role", run_id=result.run_id), by="role",
                                      simulated=simulated))
            if result.transfers:
                console.print(transfers_table(result.transfers, simulated=simulated))
            console.print(f"billed {result.billed.total_tokens} tokens, accepted "
                          f"{sum(result.accepted_tokens.values())}, waste {result.waste_tokens}; "
                          f"run id {result.run_id}", highlight=False)
        if not result.answer and result.stop_reason.startswith("model failed"):
            raise RunError(result.stop_reason)

