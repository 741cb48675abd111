"""``stratagem tasks``: list the task suites, or preview one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from stratagem.cli._common import console, parse_params
from stratagem.tasks import SUITES, get_suite


def tasks_command(
    suite: Annotated[str | None, typer.Argument(help="A suite to preview.")] = None,
    n: Annotated[int, typer.Option("-n", help="Tasks to show.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Suite parameter KEY=VALUE.")
    ] = None,
    few_shot: Annotated[int, typer.Option(
        help="Also show the worked examples an ablation with this `few_shot` would give the "
             "solver for these tasks.")] = 0,
) -> None:
    """List the suites, or show sample tasks of one with their answers and difficulty."""
    if suite is None:
        table = Table(title="task suites")
        table.add_column("suite")
        table.add_column("what")
        for name, maker in SUITES.items():
            doc = (getattr(maker, "__doc__", "") or "").strip().splitlines()
            table.add_row(name, doc[0] if doc else "")
        console.print(table)
        return
    chosen = get_suite(suite, **parse_params(param))
    table = Table(title=f"{suite}: {n} sample task(s), seed {seed}")
    for col in ("id", "question", "answer", "difficulty"):
        table.add_column(col, overflow="fold")
    drawn = chosen.generate(n, seed=seed)
    for t in drawn:
        diff = "" if t.difficulty is None else f"{t.difficulty:.2f}"
        table.add_row(t.id, t.question, t.answer or "(checker)", diff)
    console.print(table)
    if few_shot:
        examples = chosen.demonstrations(few_shot, exclude={t.question for t in drawn},
                                         seed=seed)
        shown = Table(title=f"{suite}: {few_shot} worked example(s) shown before each task")
        for col in ("question", "reply"):
            shown.add_column(col, overflow="fold")
        for question, reply in examples:
            shown.add_row(question, reply)
        console.print(shown)
