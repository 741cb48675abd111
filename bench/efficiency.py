"""Token efficiency: the tokens each policy needs to match uniform best-of-8's accuracy.

On the embedded model (SmolLM2-135M, started on 127.0.0.1 by stratagem) by default, every
cell through ``stratagem.ablation.run_ablation``, on the same tasks and the same sampling
seeds (branch ``i`` of a task samples with seed ``seed + i`` in every cell), at the same
temperature, with ``--few-shot`` worked examples (never a task being evaluated) before each
task. Two suites (``--suite``):

* ``words`` (a verifier: the exact checker): "write an English word that starts with 'b'",
  first letters from the whole alphabet, so difficulty varies by letter.
* ``connectivity`` (no verifier: answers are chosen by vote): s-t connectivity with shortest
  paths of 1 to ``--max-path`` edges, so difficulty varies by construction.

Policies, each at a knob (per-task budgets ``--fractions`` x ``B``, ``B = N x --per-sample``):

* **best_of_N** (the baseline): ``best_of_n(N)`` chosen by the verifier (words) or by vote
  (connectivity), every task the budget ``B``.
* **sequential** (words only: it needs a verifier): one sample, then two more per round,
  until one is verified or the budget cannot fit another (``judge_feedback``); uniform split.
* **difficulty_adaptive** (words only): the same, with the batch total split by the
  difficulty label. Not run on connectivity: without a verifier it has no early stop, and
  under best-of-N voting a share below N samples fits no branch (each gets share / N).
* **adaptive_consistency**: voting ``best_of_n(N)`` under the Adaptive-Consistency stopping
  rule (Aggarwal et al. 2023), at thresholds ``--thresholds``. On ``words`` it ignores the
  verifier, as it would on a task without one.
* **compute_optimal**: a probe of ``--probe`` sample(s) per query, a table fitted on
  ``--calibration`` tasks drawn apart from the evaluated ones, and a choice per query
  (stop / sample on to 2, 4 or 8) priced so the calibration mix spends the budget. The probe's
  bin comes from ``--probe-signal``: ``agreement`` (the default: verified, else the votes
  among the probe samples), ``logprob`` (verified, else the tercile of the probe's mean token
  log-probability, which the server returns with ``logprobs``) or ``both``. ``--options``
  offers more kinds (e.g. ``stop sequential refine decompose``; refine and decompose are run
  on the calibration split, their tokens counted in its cost); the default is sampling only.

Headline (``SUMMARY``): per policy, the cheapest cell whose accuracy is at least best-of-N's,
and its mean billed tokens per task against best-of-N's (calibration tokens shown apart: they
are paid once per suite, not per task). Accuracies carry Wilson 95% intervals: with the small
``n`` this CPU allows, "matches" means the point estimate, and the intervals say how much
that is worth. Targets (issue 16): compute_optimal at <= 0.25x best-of-N and below
adaptive_consistency.

Usage:
    python bench/efficiency.py [--suite words|connectivity] [--tasks 10] [--n 8]
        [--seeds 0 1000 2000] [--fractions 0.25 0.5 1] [--thresholds 0.8 0.95]
        [--few-shot 2] [--calibration 8] [--probe-signal agreement|logprob|both]
        [--options stop sequential vote ac refine decompose]
        [--keep DIR] [--backend local|simulated]

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
from statsmodels.stats.proportion import proportion_confint

from stratagem.ablation import ResultsStore, parse_config, run_ablation
from stratagem.budgets import LedgerStore
from stratagem.logging import configure_logging

TARGET = 0.25


def suite_table(args: argparse.Namespace) -> dict[str, Any]:
    if args.suite == "words":
        return {"name": "words", "n": args.tasks, "seed": args.task_seed, "length": "any",
                "letters": args.letters, "few_shot": args.few_shot}
    return {"name": "connectivity", "n": args.tasks, "seed": args.task_seed,
            "nodes": args.nodes, "path_length": [1, args.max_path], "few_shot": args.few_shot}


def config(name: str, out: Path, args: argparse.Namespace, *, topology: dict[str, Any],
           budgets: list[int], policies: list[Any], reallocation: str) -> Any:
    """An ablation config for one group of cells (built in code, validated as a file is)."""
    return parse_config({
        "name": name,
        "output": str(out / name),
        "endpoint": {"backend": args.backend},
        "grid": {"topologies": [topology], "budgets": budgets, "seeds": args.seeds,
                 "policies": policies},
        "suites": [suite_table(args)],
        "run": {"concurrency": args.concurrency, "temperature": args.temperature,
                "max_output": args.max_output, "reallocation": reallocation,
                # The verifier is free and voting needs no judge: every token is the solver's.
                "split": {"solver": 1.0}, "durable": True},
    }, source=f"bench/efficiency.py:{name}")


def groups(args: argparse.Namespace, base: int, budgets: list[int]) -> dict[str, Any]:
    n = args.n
    verified = args.suite == "words"
    select = "verifier" if verified else "vote"
    bo = {"name": "best_of_n", "n": n, "select": select, "label": f"best_of_{n}"}
    vote = {"name": "best_of_n", "n": n, "select": "vote", "label": f"vote_{n}"}
    rounds = 1 + math.ceil(max([*budgets, base]) / args.per_sample)
    seq = {"name": "best_of_n", "n": 1, "select": "verifier", "max_rounds": rounds,
           "label": "sequential"}
    da = {"name": "difficulty_adaptive", "floor": args.floor, "label": "difficulty_adaptive"}
    out: dict[str, Any] = {
        f"best_of_{n}": dict(topology=bo, budgets=[base], policies=["uniform"],
                             reallocation="none"),
    }
    if verified:
        out["sequential"] = dict(topology=seq, budgets=budgets, policies=["uniform"],
                                 reallocation="judge_feedback")
        out["difficulty_adaptive"] = dict(topology=seq, budgets=budgets, policies=[da],
                                          reallocation="judge_feedback")
    # Without a verifier difficulty_adaptive has no early stop, and under best-of-N voting a
    # share below N samples fits no branch at all (each branch gets share / N): not run.
    out["adaptive_consistency"] = dict(
        topology=vote, budgets=[base], reallocation="none",
        policies=[{"name": "adaptive_consistency", "threshold": t, "label": f"ac@{t:g}"}
                  for t in args.thresholds])
    out["compute_optimal"] = dict(
        topology=bo, budgets=budgets, reallocation="none",
        policies=[{"name": "compute_optimal", "probe": args.probe, "samples": [2, 4, n],
                   "calibration": args.calibration, "probe_signal": args.probe_signal,
                   **({"options": args.options} if args.options else {}),
                   "label": "compute_optimal"}])
    return out


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
                     "errors": int(g["error"].notna().sum())})
    return pd.DataFrame(rows)


def show(cells: pd.DataFrame) -> None:
    print(f"{'cell':<44} {'budget/task':>11} {'accuracy [Wilson 95%]':>28} "
          f"{'tokens/task':>11} {'calls/task':>10}")
    for c in cells.itertuples():
        label = f"{c.group} ({c.policy})"
        acc = f"{c.accuracy:6.1%} ({c.correct}/{c.runs}) [{c.lo:.0%}, {c.hi:.0%}]"
        errs = f"  {c.errors} run errors" if c.errors else ""
        print(f"{label:<44} {c.budget:>11} {acc:>28} {c.tokens:>11.0f} "
              f"{c.calls:>10.2f}{errs}")


def calibration_tokens(folder: Path) -> tuple[int, int]:
    """Billed tokens and calls of a group's calibration split (0 when it has none)."""
    with LedgerStore(folder / "ledger.sqlite") as store:
        rows = [e for e in store.entries() if e.labels.get("phase") == "calibration"]
    return sum(e.total_tokens for e in rows), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["words", "connectivity"], default="words")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the task draw")
    # Branch i samples with seed + i: seeds far apart give independent samples.
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000],
                        help="sampling seeds (each runs every task again)")
    parser.add_argument("--n", type=int, default=8, help="N of the uniform best-of-N baseline")
    parser.add_argument("--few-shot", type=int, default=2,
                        help="worked examples (other questions) shown before each task")
    parser.add_argument("--per-sample", type=int, default=None,
                        help="tokens one full sample needs (default: 230 words, 520 "
                             "connectivity)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="budgets of the adaptive policies, as fractions of best-of-N's")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.95],
                        help="adaptive_consistency thresholds")
    parser.add_argument("--probe", type=int, default=1, help="compute_optimal probe samples")
    parser.add_argument("--calibration", type=int, default=8,
                        help="compute_optimal calibration tasks (drawn apart)")
    parser.add_argument("--probe-signal", choices=["agreement", "logprob", "both"],
                        default="agreement",
                        help="compute_optimal: the probe's bins from answer agreement, the "
                             "mean token log-probability, or both")
    parser.add_argument("--options", nargs="+", default=None,
                        choices=["stop", "sequential", "vote", "ac", "refine", "decompose"],
                        help="compute_optimal: kinds of option offered (default: sampling)")
    parser.add_argument("--max-output", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2, help="runs in flight")
    parser.add_argument("--letters", default=string.ascii_lowercase)
    parser.add_argument("--nodes", type=int, default=8, help="connectivity: graph size")
    parser.add_argument("--max-path", type=int, default=4,
                        help="connectivity: path lengths 1 to this")
    parser.add_argument("--floor", type=float, default=1.0,
                        help="difficulty_adaptive: weight floor")
    parser.add_argument("--backend", choices=["local", "simulated"], default="local")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the ablation folders here (default: a temporary folder)")
    args = parser.parse_args()
    configure_logging(level="warning")
    args.per_sample = args.per_sample or (230 if args.suite == "words" else 520)

    base = args.n * args.per_sample
    budgets = sorted({max(1, round(f * base)) for f in args.fractions})
    plan = groups(args, base, budgets)
    out = args.keep or Path(tempfile.mkdtemp(prefix="stratagem-efficiency-"))
    frames, calib = [], {}
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    try:
        for name, spec in plan.items():
            t0 = time.perf_counter()
            outcome = asyncio.run(run_ablation(config(name, out, args, **spec)))
            with ResultsStore(outcome.output / "results.sqlite") as rs:
                df = rs.frame()
            df["group"] = name
            frames.append(df)
            calib[name] = calibration_tokens(outcome.output)
            extra = (f", calibration {calib[name][1]} calls" if calib[name][1] else "")
            print(f"[{name}: {outcome.ran} runs in {time.perf_counter() - t0:.0f} s, "
                  f"{outcome.failed} failed{extra}; load {os.getloadavg()[0]:.1f}]",
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    df = pd.concat(frames, ignore_index=True)
    cells = summarize(df)
    tag = " (SIMULATED backend)" if bool(df["simulated"].any()) else ""
    print(f"\n{args.suite} suite{tag}: {args.tasks} tasks x {len(args.seeds)} seed(s), "
          f"{args.few_shot} worked examples, temperature {args.temperature}, max_output "
          f"{args.max_output}, B = {base} tokens/task; {elapsed:.0f} s, load average "
          f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end (2 cores shared)")
    show(cells)
    for name, (tokens, calls) in calib.items():
        if calls:
            print(f"{name}: calibration split {tokens:,} tokens in {calls} calls (once per "
                  f"suite; {tokens / (args.tasks * len(args.seeds)):.0f} per evaluated run "
                  "if charged to this batch)")

    baseline = cells[cells.group == f"best_of_{args.n}"].iloc[0]
    print(f"\nuniform best-of-{args.n}: accuracy {baseline.accuracy:.1%} "
          f"[{baseline.lo:.0%}, {baseline.hi:.0%}], {baseline.tokens:.0f} tokens/task")
    if baseline.correct == 0:
        print("note: the baseline solved no task, so any cell 'matches' it: the ratios below "
              "say nothing")
    parts = []
    for name in plan:
        if name == f"best_of_{args.n}":
            continue
        mine = cells[cells.group == name].sort_values("tokens")
        hit = mine[mine.accuracy >= baseline.accuracy]
        if hit.empty:
            top = mine.sort_values("accuracy").iloc[-1]
            parts.append(f"{name} no match (best {top.accuracy:.0%} at "
                         f"{top.tokens / baseline.tokens:.2f}x)")
            continue
        h = hit.iloc[0]
        parts.append(f"{name} {h.tokens / baseline.tokens:.2f}x ({h.accuracy:.0%} "
                     f"[{h.lo:.0%}, {h.hi:.0%}], {h.policy}@{h.budget})")
    co = cells[cells.group == "compute_optimal"]
    co_hit = co[co.accuracy >= baseline.accuracy].sort_values("tokens")
    ac = cells[cells.group == "adaptive_consistency"]
    ac_hit = ac[ac.accuracy >= baseline.accuracy].sort_values("tokens")
    met = not co_hit.empty and co_hit.iloc[0].tokens / baseline.tokens <= TARGET
    below_ac = not co_hit.empty and (ac_hit.empty
                                     or co_hit.iloc[0].tokens < ac_hit.iloc[0].tokens)
    print(f"SUMMARY efficiency{tag} {args.suite}: tokens to match best-of-{args.n}'s "
          f"{baseline.accuracy:.0%} [{baseline.lo:.0%}, {baseline.hi:.0%}] at "
          f"{baseline.tokens:.0f} tokens/task, {int(baseline.runs)} runs per cell: "
          + "; ".join(parts)
          + (f" (compute_optimal {'meets' if met else 'MISSES'} <= {TARGET}x; "
             f"{'below' if below_ac else 'NOT below'} adaptive_consistency)" if not co_hit.empty
             else f" (compute_optimal did not match: MISSES <= {TARGET}x)"))


if __name__ == "__main__":
    main()
