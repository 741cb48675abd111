"""Token efficiency: the tokens adaptive allocation needs to match uniform best-of-N.

On the embedded model (SmolLM2-135M, started on 127.0.0.1 by stratagem), the ``words``
suite ("write an English word that starts with 'b'", checked exactly; first letters drawn from
the whole alphabet, so difficulty varies), same tasks and seeds for every cell, each run
through ``stratagem.ablation.run_ablation``. Every solver call shows ``--few-shot`` worked
examples first (other letters, never a task being evaluated: ``few_shot`` in the suite
table); without them this model rarely follows the answer format and best-of-N measures little
but luck (``--few-shot 0`` shows it).

  * **uniform best-of-N** (the baseline): ``best_of_n(N, select="verifier")``, every task the
    same budget ``B = N x --per-sample`` (enough for N full samples), no reallocation. Its
    accuracy ``a_u`` is the share of tasks with a correct answer among N samples.
  * **adaptive**: a ``difficulty_adaptive`` policy splits each cell's batch total between
    tasks by their difficulty label (how few common words start with the letter): weight
    ``floor + difficulty``, and tasks above ``--skip-above`` (none by default) are judged
    hopeless and get ``--skip-weight``. Within a task sampling goes on in rounds
    (``best_of_n(1, select="verifier", max_rounds=...)`` with ``reallocation =
    "judge_feedback"``): one sample, then two more per round until the verifier accepts one
    or the task's budget cannot fit another, so the budget caps how many samples are drawn
    and a task stops spending as soon as it is solved. It runs at per-task budgets ``B'``
    from ``--fractions`` x ``B`` (above 1: a cap above the baseline's, which only the tasks
    still unsolved after most of it reach).
  * **uniform sequential** at ``B``: the same rounds with the uniform split. It separates the
    two things adaptive does: stopping early once a sample is verified, and moving budget
    between tasks by difficulty.

Branch ``i`` of a task always samples with seed ``seed + i``, so every cell draws from the
same sampling streams. On the embedded server the same seed does not always give the same
text (a prompt evaluated afresh samples differently from one served from the prompt cache),
so cells with equal sample counts can still differ by a task or two.

Headline: the smallest ``B'`` whose adaptive accuracy is >= ``a_u``, and the ratio of
adaptive's mean billed tokens per task there to best-of-N's (also ``B'/B``, the ratio of
budgets). Accuracies are shown with Wilson 95% intervals. Target: <= 0.5x.

The ratio depends on N and on how often a sample is right: stopping at the first verified
sample draws about ``(1 - (1 - p)^N) / p`` samples where best-of-N draws N, so the saving
grows with N and with p. ``--n 4`` shows the smaller N.

Usage:
    python bench/efficiency.py [--tasks 12] [--n 8] [--fractions 0.5 0.75 1 1.25 1.5]
                               [--seeds 0 1000 ...] [--few-shot 2] [--letters abc...z]
                               [--skip-above 1] [--keep DIR] [--backend local|simulated]

``--tasks`` stays small because the ``words`` suite has one question per letter: the
examples need letters that no task drew.

``--backend simulated`` runs the same design on the simulated backend in seconds (for
checking the benchmark itself; its figures are SIMULATED and say nothing about the model).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import spearmanr
from statsmodels.stats.proportion import proportion_confint

from stratagem.ablation import ResultsStore, parse_config, run_ablation
from stratagem.logging import configure_logging

TARGET = 0.5


def config(name: str, out: Path, args: argparse.Namespace, *, topology: dict[str, Any],
           budgets: list[int], policies: list[Any], reallocation: str) -> Any:
    """An ablation config for one group of cells (built in code, validated as a file is)."""
    return parse_config({
        "name": name,
        "output": str(out / name),
        "endpoint": {"backend": args.backend},
        "grid": {"topologies": [topology], "budgets": budgets, "seeds": args.seeds,
                 "policies": policies},
        "suites": [{"name": "words", "n": args.tasks, "seed": args.task_seed,
                    "length": "any", "letters": args.letters, "few_shot": args.few_shot}],
        "run": {"concurrency": args.concurrency, "temperature": args.temperature,
                "max_output": args.max_output, "judge_with": "verifier",
                "reallocation": reallocation,
                # The verifier is free: every token goes to the solver.
                "split": {"solver": 1.0}, "durable": True},
    }, source=f"bench/efficiency.py:{name}")


def wilson(k: int, n: int) -> tuple[float, float]:
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: accuracy with its interval, billed tokens and samples per task."""
    rows = []
    for (group, policy, budget), g in df.groupby(["group", "policy", "budget"], sort=False):
        k, n = int(g["correct"].sum()), len(g)
        lo, hi = wilson(k, n)
        rows.append({"group": group, "policy": policy, "budget": int(budget), "correct": k,
                     "runs": n, "accuracy": k / n, "lo": lo, "hi": hi,
                     "tokens": float(g["tokens_total"].mean()),
                     "calls": float(g["calls"].mean()),
                     "allocated_min": int(g["allocated"].min()),
                     "allocated_max": int(g["allocated"].max()),
                     "errors": int(g["error"].notna().sum())})
    return pd.DataFrame(rows)


def show(cells: pd.DataFrame) -> None:
    print(f"{'cell':<34} {'budget/task':>11} {'allocated':>11} {'accuracy [Wilson 95%]':>26} "
          f"{'tokens/task':>11} {'calls/task':>10}")
    for c in cells.itertuples():
        label = f"{c.group} ({c.policy})"
        alloc = f"{c.allocated_min}-{c.allocated_max}"
        acc = f"{c.accuracy:6.1%} ({c.correct}/{c.runs}) [{c.lo:.0%}, {c.hi:.0%}]"
        errs = f"  {c.errors} run errors" if c.errors else ""
        print(f"{label:<34} {c.budget:>11} {alloc:>11} {acc:>26} {c.tokens:>11.0f} "
              f"{c.calls:>10.2f}{errs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12,
                        help="words tasks (few enough that letters are left for examples)")
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the task draw")
    # Branch i samples with seed + i: seeds far apart give independent samples.
    parser.add_argument("--seeds", type=int, nargs="+",
                        default=[0, 1000, 2000, 3000, 4000, 5000],
                        help="sampling seeds (each runs every task again)")
    parser.add_argument("--n", type=int, default=8, help="N of the uniform best-of-N baseline")
    parser.add_argument("--few-shot", type=int, default=2,
                        help="worked examples (other letters) shown before each task")
    parser.add_argument("--per-sample", type=int, default=230,
                        help="tokens one full sample needs (prompt + max output + margin)")
    parser.add_argument("--fractions", type=float, nargs="+",
                        default=[0.5, 0.75, 1.0, 1.25, 1.5],
                        help="adaptive budgets, as fractions of the baseline's")
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="adaptive budgets per task in tokens (instead of --fractions)")
    parser.add_argument("--max-output", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2, help="runs in flight")
    parser.add_argument("--letters", default=string.ascii_lowercase,
                        help="first letters to draw from (default: the whole alphabet)")
    parser.add_argument("--floor", type=float, default=1.0,
                        help="adaptive: weight of every task that is not judged hopeless")
    parser.add_argument("--skip-above", type=float, default=1.0,
                        help="adaptive: tasks with a higher difficulty are judged hopeless")
    parser.add_argument("--skip-weight", type=float, default=0.1,
                        help="adaptive: weight of a hopeless task")
    parser.add_argument("--backend", choices=["local", "simulated"], default="local")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the ablation folders here (default: a temporary folder)")
    args = parser.parse_args()
    configure_logging(level="warning")

    base = args.n * args.per_sample
    budgets = sorted(set(args.budgets or [max(1, round(f * base)) for f in args.fractions]))
    # Enough rounds (two samples each after the first) that the budget, not the round limit,
    # stops sampling even when samples cost half of --per-sample; few enough that rounds
    # granted after the budget ran out (which draw nothing) stay cheap.
    rounds = 1 + math.ceil(max([*budgets, base]) / args.per_sample)
    groups = {
        f"best_of_{args.n}": dict(
            topology={"name": "best_of_n", "n": args.n, "select": "verifier",
                      "label": f"best_of_{args.n}"},
            budgets=[base], policies=["uniform"], reallocation="none"),
        "sequential": dict(
            topology={"name": "best_of_n", "n": 1, "select": "verifier", "max_rounds": rounds,
                      "label": "sequential"},
            budgets=[base], policies=["uniform"], reallocation="judge_feedback"),
        "adaptive": dict(
            topology={"name": "best_of_n", "n": 1, "select": "verifier", "max_rounds": rounds,
                      "label": "sequential"},
            budgets=budgets, policies=[{
                "name": "difficulty_adaptive", "floor": args.floor,
                "skip_above": args.skip_above, "skip_weight": args.skip_weight,
                "label": "difficulty_adaptive"}], reallocation="judge_feedback"),
    }
    out = args.keep or Path(tempfile.mkdtemp(prefix="stratagem-efficiency-"))
    frames = []
    t_start = time.perf_counter()
    try:
        for name, spec in groups.items():
            t0 = time.perf_counter()
            cfg = config(name, out, args, **spec)  # type: ignore[arg-type]
            outcome = asyncio.run(run_ablation(cfg))
            with ResultsStore(outcome.output / "results.sqlite") as rs:
                df = rs.frame()
            df["group"] = name
            frames.append(df)
            print(f"[{name}: {outcome.ran} runs in {time.perf_counter() - t0:.0f} s, "
                  f"{outcome.failed} failed]", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    df = pd.concat(frames, ignore_index=True)
    cells = summarize(df)
    simulated = bool(df["simulated"].any())

    tag = " (SIMULATED backend)" if simulated else ""
    print(f"\nwords suite{tag}: {args.tasks} tasks x {len(args.seeds)} seed(s), letters "
          f"{args.letters}, {args.few_shot} worked examples, temperature {args.temperature}, "
          f"max_output {args.max_output}; "
          f"adaptive: floor {args.floor}, hopeless above difficulty {args.skip_above} "
          f"(weight {args.skip_weight}); "
          f"{elapsed:.0f} s, load {os.getloadavg()[0]:.1f}")
    show(cells)

    # Difficulty-adaptive allocation can only help if the label predicts failure.
    base_runs = df[df.group == f"best_of_{args.n}"]
    if base_runs["correct"].nunique() > 1 and base_runs["difficulty"].nunique() > 1:
        rho, p = spearmanr(base_runs["difficulty"], base_runs["correct"].astype(float))
        print(f"difficulty label vs best-of-{args.n} success: Spearman rho {rho:+.2f} "
              f"(p {p:.2f}, {len(base_runs)} runs; negative means harder tasks fail more)")
    hopeless = base_runs["difficulty"] > args.skip_above
    for name, part in (("judged hopeless", base_runs[hopeless]),
                       ("the rest", base_runs[~hopeless])):
        if len(part):
            print(f"best-of-{args.n} on tasks {name} (difficulty "
                  f"{'>' if name == 'judged hopeless' else '<='} {args.skip_above}): "
                  f"{int(part['correct'].sum())}/{len(part)} correct")

    baseline = cells[cells.group == f"best_of_{args.n}"].iloc[0]
    seq = cells[cells.group == "sequential"].iloc[0]
    adaptive = cells[cells.group == "adaptive"].sort_values("budget")
    matched = adaptive[adaptive.accuracy >= baseline.accuracy]
    print(f"\nuniform best-of-{args.n}: accuracy {baseline.accuracy:.1%} "
          f"[{baseline.lo:.0%}, {baseline.hi:.0%}], {baseline.tokens:.0f} tokens/task")
    print(f"uniform sequential at the same budget (early stop only): accuracy "
          f"{seq.accuracy:.1%}, {seq.tokens:.0f} tokens/task "
          f"({seq.tokens / baseline.tokens:.2f}x best-of-{args.n})")
    if baseline.correct == 0:
        print("note: the baseline solved no task, so any budget 'matches' it; the ratio below "
              "is meaningless: run more tasks or a larger --n")
    if matched.empty:
        top = adaptive.iloc[-1]
        print(f"adaptive never reached {baseline.accuracy:.1%} within {top.budget} tokens/task "
              f"(best {adaptive.accuracy.max():.1%})")
        print(f"SUMMARY efficiency{tag}: adaptive allocation did not match uniform best-of-"
              f"{args.n}'s accuracy ({baseline.accuracy:.1%}) at up to {top.budget / base:.2f}x "
              f"its budget: ratio > {top.tokens / baseline.tokens:.2f}x billed tokens (MISSES "
              f"target <= {TARGET}x)")
        return
    hit = matched.iloc[0]
    ratio = hit.tokens / baseline.tokens
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"adaptive matches it at {hit.budget} tokens/task budget ({hit.budget / base:.2f}x "
          f"B): accuracy {hit.accuracy:.1%} [{hit.lo:.0%}, {hit.hi:.0%}], "
          f"{hit.tokens:.0f} billed tokens/task")
    print(f"SUMMARY efficiency{tag}: adaptive allocation needs {ratio:.2f}x the billed tokens of "
          f"uniform best-of-{args.n} to match its accuracy ({hit.accuracy:.1%} "
          f"[{hit.lo:.0%}, {hit.hi:.0%}] vs {baseline.accuracy:.1%} "
          f"[{baseline.lo:.0%}, {baseline.hi:.0%}], {int(hit.runs)} runs per cell; "
          f"budget ratio {hit.budget / base:.2f}x) ({verdict} target <= {TARGET}x)")


if __name__ == "__main__":
    main()
