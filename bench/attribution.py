"""Attribution speed: ``attribute()`` on 5,000 runs with 1,000 bootstrap resamples.

The table is a simulated sweep from the run-level latent model
(``stratagem.simulate.latent_runs``): 5 topologies x 4 budgets x ``--tasks`` tasks x seeds,
about ``--rows`` rows. Measured in one run:

  * ``attribute(df, n_boot=...)`` with its defaults: exact LMG/Shapley shares of R² for
    spend and the coordination variables it keeps, with percentile intervals (and once
    clustered by task);
  * the baseline: one plain OLS fit of the full model (statsmodels, same design) on the
    same rows, and its R² (which ``attribute`` must reproduce);
  * for scale, the naive way: one statsmodels OLS fit per subset of groups per resample,
    timed on ``--naive-boots`` resamples and extrapolated to ``--boot``.

Usage:
    python bench/attribution.py [--rows 5000] [--boot 1000]

BLAS threads matter on a small machine: with OpenBLAS's default (one thread per core) and
other processes busy, a 5,000-row OLS fit took 16 ms here, against 0.3 ms with
``OPENBLAS_NUM_THREADS=1``; ``attribute`` slows down too, less. Both settings are honest;
the output says which one ran.

The last line states the time of ``attribute`` and its ratio to one OLS fit.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time

import numpy as np
import pandas as pd
import statsmodels.api as sm

from stratagem.attribution import attribute
from stratagem.simulate import LatentEffects, latent_runs

TOPOLOGIES = ["single", "plan_solve", "best_of_n", "refine", "tree"]
BUDGETS = [1000, 2000, 4000, 8000]


def table(rows: int) -> pd.DataFrame:
    per_cell = max(1, math.ceil(rows / (len(TOPOLOGIES) * len(BUDGETS))))
    effects = LatentEffects(base=0.5, token_effect=0.1, noise=0.3, reference_tokens=2828,
                            topology_effects={"single": -0.1, "best_of_n": 0.05, "tree": 0.1})
    df = latent_runs(effects, topologies=TOPOLOGIES, budgets=BUDGETS, seeds=[0],
                     tasks_per_cell=per_cell, seed=3)
    return df.iloc[:rows].reset_index(drop=True)


def design(df: pd.DataFrame, groups: tuple[str, ...]) -> np.ndarray:
    """Intercept, log2(1 + tokens) and dummies of ``groups`` (first level dropped)."""
    parts = [np.log2(1 + df["tokens_total"].to_numpy(dtype=float))[:, None]]
    for g in groups:
        parts.append(pd.get_dummies(df[g], drop_first=True, dtype=float).to_numpy())
    return sm.add_constant(np.hstack(parts), has_constant="add")


def best_of(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_lmg_seconds(df: pd.DataFrame, groups: tuple[str, ...], boots: int) -> float:
    """One statsmodels OLS per subset of {spend, *groups}, per resample."""
    y = df["correct"].to_numpy(dtype=float)
    names = ("spend", *groups)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(boots):
        idx = rng.integers(0, len(df), len(df))
        sample = df.iloc[idx]
        for r in range(1, len(names) + 1):
            for subset in itertools.combinations(names, r):
                cols = [g for g in subset if g != "spend"]
                x = design(sample, tuple(cols))
                if "spend" not in subset:
                    x = np.delete(x, 1, axis=1)
                sm.OLS(y[idx], x).fit()
    return (time.perf_counter() - t0) / boots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of attribute()")
    parser.add_argument("--naive-boots", type=int, default=10)
    args = parser.parse_args()

    df = table(args.rows)
    result = attribute(df, n_boot=args.boot, seed=0)
    # The groups attribute() kept: roles_present and mode are determined by the topology in
    # this sweep, so it skips them (they would make the OLS design rank-deficient).
    kept = tuple(g for g in result.shares if g != "spend")
    y = df["correct"].to_numpy(dtype=float)
    x = design(df, kept)
    ols = sm.OLS(y, x).fit()
    t_ols = best_of(lambda: sm.OLS(y, x).fit(), 20)
    t_ols_design = best_of(lambda: sm.OLS(y, design(df, kept)).fit(), 20)
    t_attr = best_of(lambda: attribute(df, n_boot=args.boot, seed=0), args.repeats)
    t_clustered = best_of(lambda: attribute(df, n_boot=args.boot, seed=0, cluster="task_id"),
                          args.repeats)
    t_point = best_of(lambda: attribute(df, n_boot=0), 5)
    per_boot = naive_lmg_seconds(df, kept, args.naive_boots)

    k = len(result.shares)
    print(f"{len(df):,} runs (SIMULATED latent model), {args.boot:,} bootstrap resamples, "
          f"{k} groups ({', '.join(result.shares)}; skipped: {', '.join(result.skipped) or '-'})")
    print(f"R² attribute {result.r2.estimate:.5f} vs statsmodels OLS {ols.rsquared:.5f} "
          f"(same design: log2 tokens + {' + '.join(kept)} dummies); machine load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    for g, s in result.shares.items():
        print(f"  share {g:<14} {s.estimate:6.1%}  [{s.low:6.1%}, {s.high:6.1%}]")
    print(f"one statsmodels OLS fit (design prebuilt)       {t_ols * 1000:9.2f} ms")
    print(f"one statsmodels OLS fit (design built too)      {t_ols_design * 1000:9.2f} ms")
    print(f"attribute(n_boot=0), point estimates only       {t_point * 1000:9.2f} ms")
    print(f"attribute(n_boot={args.boot})                         {t_attr * 1000:9.2f} ms")
    print(f"attribute(n_boot={args.boot}, cluster='task_id')      {t_clustered * 1000:9.2f} ms")
    naive = per_boot * (args.boot + 1)
    print(f"naive LMG bootstrap with statsmodels ({2 ** k - 1} fits per resample, timed on "
          f"{args.naive_boots}): {per_boot * 1000:.1f} ms per resample, ~{naive:.0f} s for "
          f"{args.boot:,} ({naive / t_attr:.0f}x attribute)")
    print(f"SUMMARY attribution: attribute() on {len(df):,} runs x {args.boot:,} boots took "
          f"{t_attr:.2f} s = {t_attr / t_ols_design:.0f}x one plain OLS fit "
          f"({t_ols_design * 1000:.1f} ms), ~{naive / t_attr:.0f}x faster than a naive "
          f"statsmodels bootstrap")


if __name__ == "__main__":
    main()
