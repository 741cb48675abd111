"""Synthetic results, attributions and ledger totals for the report tests.

Results are built as plain rows with ``RunRecord``'s columns (the frame is the contract), so
these tests do not import the ablation runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import pytest

from stratagem.attribution import Attribution, Interval, RoleReturn, TopologyComparison
from stratagem.budgets import Transfer, UsageTotals

SECRET = "sk-" + "Zq7" * 10
"""Looks like an OpenAI key; must never reach a table, plot or report."""

FrameFactory = Callable[..., pd.DataFrame]


def _records(
    *,
    topologies: Sequence[str],
    budgets: Sequence[int],
    seeds: int,
    tasks: int,
    simulated: bool,
    unknown_cost_every: int,
) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for ti, topology in enumerate(topologies):
        for budget in budgets:
            for seed in range(seeds):
                for task in range(tasks):
                    # Deterministic "accuracy" that rises with budget and differs by topology.
                    correct = (seed + task + ti) % 5 < 2 + budget // 2000
                    solver = int(budget * (0.5 + 0.1 * ti)) + 37 * task
                    judge = budget // 10 if topology != "single" else 0
                    planner = budget // 8 if topology == "hierarchical" else 0
                    total = solver + judge + planner + 25  # 25 tokens from a user role
                    waste = total // (5 + ti)
                    i = len(out)
                    out.append(
                        dict(
                            run_id=f"r{i}",
                            cell=f"{topology}|{budget}|uniform",
                            suite="arith",
                            task_id=f"t{task}",
                            topology=topology,
                            budget=budget,
                            allocated=budget,
                            seed=seed,
                            backend="simulated" if simulated else "openai",
                            model="sim-1" if simulated else "gpt-4o-mini",
                            simulated=simulated,
                            correct=correct,
                            answer=f"answer {i}",
                            stop_reason="done",
                            tokens_total=total,
                            prompt_tokens=total - 40,
                            completion_tokens=40,
                            cached_tokens=None,
                            reasoning_tokens=None,
                            tokens_planner=planner,
                            tokens_decomposer=0,
                            tokens_solver=solver,
                            tokens_judge=judge,
                            accepted_tokens=total - waste,
                            waste_tokens=waste,
                            calls=3,
                            error_calls=0,
                            error=None,
                            cost_usd=None
                            if unknown_cost_every and i % unknown_cost_every == 0
                            else total * 1e-6,
                        )
                    )
    return out


@pytest.fixture
def make_frame() -> FrameFactory:
    """Build a results frame: 3 topologies x 2 budgets by default."""

    def make(
        *,
        topologies: Sequence[str] = ("single", "debate", "hierarchical"),
        budgets: Sequence[int] = (1000, 4000),
        seeds: int = 3,
        tasks: int = 4,
        simulated: bool = False,
        unknown_cost_every: int = 0,
    ) -> pd.DataFrame:
        records = _records(
            topologies=topologies,
            budgets=budgets,
            seeds=seeds,
            tasks=tasks,
            simulated=simulated,
            unknown_cost_every=unknown_cost_every,
        )
        return pd.DataFrame(records)

    return make


@pytest.fixture
def frame(make_frame: FrameFactory) -> pd.DataFrame:
    """Real (not simulated) results, 3 topologies x 2 budgets."""
    return make_frame()


@pytest.fixture
def sim_frame(make_frame: FrameFactory) -> pd.DataFrame:
    """Simulated results, 3 topologies x 2 budgets."""
    return make_frame(simulated=True)


def _attribution(*, simulated: bool = False) -> Attribution:
    """A hand-built attribution over three groups."""
    return Attribution(
        r2=Interval(0.42, 0.35, 0.49),
        shares={
            "tokens": Interval(0.55, 0.41, 0.68),
            "topology": Interval(0.30, 0.19, 0.42),
            "difficulty": Interval(0.15, 0.08, 0.24),
        },
        r2_parts={
            "tokens": Interval(0.231, 0.17, 0.29),
            "topology": Interval(0.126, 0.08, 0.18),
            "difficulty": Interval(0.063, 0.03, 0.1),
        },
        n=72,
        n_boot=200,
        groups={
            "tokens": ("log_tokens",),
            "topology": ("topology",),
            "difficulty": ("difficulty",),
        },
        simulated=simulated,
    )


@pytest.fixture
def attribution() -> Attribution:
    """Attribution of real runs."""
    return _attribution()


@pytest.fixture
def sim_attribution() -> Attribution:
    """Attribution of simulated runs."""
    return _attribution(simulated=True)


@pytest.fixture
def secret() -> str:
    """A fake API key."""
    return SECRET


@pytest.fixture
def comparisons() -> list[TopologyComparison]:
    """Comparisons at two budgets (accuracy intervals from a pretend bootstrap)."""
    return [
        TopologyComparison(
            budget=b,
            rows={
                t: {
                    "accuracy": Interval(0.5 + 0.1 * i, 0.3 + 0.1 * i, 0.7 + 0.1 * i),
                    "mean_tokens": float(b) * 0.9,
                    "target": b,
                    "n": 12,
                    "rank": 3 - i,
                }
                for i, t in enumerate(("single", "debate", "hierarchical"))
            },
        )
        for b in (1000, 4000)
    ]


@pytest.fixture
def returns() -> list[RoleReturn]:
    """Marginal returns of two roles."""
    return [
        RoleReturn("solver", Interval(0.012, 0.004, 0.02), 2100.0),
        RoleReturn("judge", Interval(-0.003, -0.01, 0.004), 250.0),
    ]


@pytest.fixture
def waste() -> pd.DataFrame:
    """Waste per topology, as ``waste_by_topology`` returns it."""
    return pd.DataFrame(
        {
            "topology": ["single", "debate", "hierarchical"],
            "mean_billed": [1500.0, 2100.0, 2600.0],
            "mean_accepted": [1250.0, 1750.0, 2250.0],
            "mean_waste": [250.0, 350.0, 350.0],
            "waste_share": [0.1667, 0.1667, 0.1346],
        }
    )


@pytest.fixture
def audit() -> dict[str, UsageTotals]:
    """Ledger totals per role: the judge's cached count and the planner's price are unknown."""
    return {
        "judge": UsageTotals(
            calls=4,
            prompt_tokens=800,
            completion_tokens=120,
            cached_tokens=None,
            reasoning_tokens=None,
            cost_usd=0.002,
            cached_unknown=4,
            reasoning_unknown=4,
        ),
        "planner": UsageTotals(
            calls=2,
            prompt_tokens=300,
            completion_tokens=90,
            cached_tokens=100,
            reasoning_tokens=None,
            cost_usd=None,
            cached_unknown=0,
            reasoning_unknown=2,
            cost_unknown=2,
        ),
        "solver": UsageTotals(
            calls=10,
            prompt_tokens=5000,
            completion_tokens=2000,
            cached_tokens=1200,
            reasoning_tokens=300,
            cost_usd=0.12,
            cached_unknown=3,
            reasoning_unknown=0,
            cost_unknown=1,
            estimated_calls=2,
            error_calls=1,
        ),
    }


@pytest.fixture
def transfers() -> list[Transfer]:
    """Two budget moves."""
    return [
        Transfer(
            run_id="r1",
            from_role="judge",
            to_role="solver",
            tokens=300,
            reason="judge confidence 0.31 < 0.5",
            node="feedback",
        ),
        Transfer(
            run_id="r2",
            from_role="planner",
            to_role="solver",
            tokens=120,
            reason="planner finished early",
        ),
    ]
