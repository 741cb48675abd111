"""``tree``: search over revisions with the judge as value function.

* ``beam``: sample ``branching`` candidates; each round keep the ``width`` best by judge score
  and revise each of them ``branching`` times against its critique, for ``depth`` rounds.
* ``mcts``: Monte Carlo tree search over revisions. Each iteration selects the node with the
  highest UCB1 value (mean judge score of its subtree plus an exploration bonus), revises it
  once, and scores the child; the score is its subtree's evidence from then on.

The final answer is the best-scored node of the whole tree.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stratagem.errors import ConfigError
from stratagem.graphs._common import (
    finalize_node,
    run_context,
    scores,
    stratagem_node,
)
from stratagem.graphs._context import RunContext
from stratagem.graphs._fanout import fan_out, sample, score_new
from stratagem.graphs._simple import Builder, Compiled, _compile, add_node
from stratagem.graphs._state import Candidate, RunState

__all__ = ["tree", "ucb_select"]


def ucb_select(candidates: list[Candidate], score_of: dict[int, float],
               exploration: float = 1.0) -> int:
    """The node to expand next: highest ``mean subtree score + c * sqrt(ln N / visits)``.

    Visits of a node are the nodes in its subtree (itself included); ties go to the earlier.
    """
    children: dict[int, list[int]] = {}
    for i, c in enumerate(candidates):
        parent = c.get("parent")
        if parent is not None:
            children.setdefault(parent, []).append(i)

    def subtree(i: int) -> list[int]:
        out, stack = [], [i]
        while stack:
            j = stack.pop()
            out.append(j)
            stack.extend(children.get(j, []))
        return out

    total = len(candidates)
    best, best_value = 0, -math.inf
    for i in range(total):
        nodes = subtree(i)
        known = [score_of[j] for j in nodes if j in score_of]
        mean = sum(known) / len(known) if known else 0.0
        value = mean + exploration * math.sqrt(math.log(max(total, 2)) / len(nodes))
        if value > best_value:
            best, best_value = i, value
    return best


def tree(
    *,
    mode: Literal["beam", "mcts"] = "beam",
    branching: int = 2,
    width: int = 2,
    depth: int = 2,
    iterations: int = 6,
    judge_with: str = "llm",
    exploration: float = 1.0,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Compiled:
    """Beam search or MCTS over solver revisions, scored by the judge (or the verifier).

    Args:
        mode: ``beam`` or ``mcts``.
        branching: Samples at the root, and revisions per kept node (beam).
        width: Nodes kept per round (beam).
        depth: Rounds of revision after the root samples (beam).
        iterations: Expansions after the root samples (mcts).
        judge_with: ``llm`` or ``verifier``.
        exploration: The UCB1 exploration constant (mcts).
        checkpointer: Saves every step, for durable runs.

    Raises:
        ConfigError: For non-positive sizes or an unknown mode.
    """
    if mode not in ("beam", "mcts"):
        raise ConfigError(f"unknown tree mode {mode!r}: use 'beam' or 'mcts'")
    if min(branching, width, depth, iterations) < 1:
        raise ConfigError("tree needs branching, width, depth and iterations >= 1")
    if judge_with not in ("llm", "verifier"):
        raise ConfigError(f"judge_with must be 'llm' or 'verifier', got {judge_with!r}")
    rounds = depth if mode == "beam" else iterations

    @stratagem_node
    async def evaluate(state: RunState, ctx: RunContext) -> dict[str, Any]:
        update = await score_new(state, ctx, judge_with)
        update["round"] = state.get("round", 0) + 1
        return update

    def start(state: RunState, runtime: Runtime[RunContext]) -> list[Send]:
        return fan_out(state, run_context(runtime), branching)

    def expand(state: RunState, runtime: Runtime[RunContext]) -> list[Send] | str:
        if state.get("stop_reason") or state.get("round", 0) > rounds:
            return "finalize"
        ctx = run_context(runtime)
        candidates = state.get("candidates", [])
        score_of = scores(state.get("verdicts", []))
        if any(v >= 1.0 for v in score_of.values()) and judge_with == "verifier":
            return "finalize"  # a verified answer: nothing left to search for
        if not candidates:
            return "finalize"  # every first sample was refused: nothing to expand
        if mode == "mcts":
            return fan_out(state, ctx, 1, revise=[ucb_select(candidates, score_of,
                                                             exploration)])
        latest = state.get("round", 0) - 1
        frontier = [i for i, c in enumerate(candidates) if c.get("round", 0) == latest]
        keep = sorted(frontier, key=lambda i: (-score_of.get(i, 0.0), i))[:width]
        if not keep:
            return "finalize"
        return fan_out(state, ctx, len(keep) * branching, revise=keep)

    g: Builder = StateGraph(
        RunState, context_schema=RunContext)
    add_node(g, "sample", sample)
    add_node(g, "evaluate", evaluate)
    add_node(g, "finalize", finalize_node)
    g.add_conditional_edges(START, start, ["sample"])
    g.add_edge("sample", "evaluate")
    g.add_conditional_edges("evaluate", expand, ["sample", "finalize"])
    g.add_edge("finalize", END)
    return _compile(g, checkpointer, recursion_limit=2 * rounds + 6)
