"""``connectivity``: is there a path from s to t in a random graph? (the compositional case)"""

from __future__ import annotations

import itertools
import random
import re
from collections import deque
from collections.abc import Iterable

from stratagem.agents import extract_answer, normalize_answer
from stratagem.errors import ConfigError
from stratagem.tasks._task import (
    ANSWER_LINE,
    IntRange,
    Suite,
    Task,
    check_count,
    distinct_draws,
    int_range,
)

__all__ = ["ConnectivitySuite", "shortest_path_length"]

MAX_NODES = 200  # larger edge lists would not fit a prompt anyway
_YES = frozenset({"yes", "y", "true", "connected", "reachable", "there is a path"})
_NO = frozenset({
    "no", "n", "false", "not connected", "disconnected", "unreachable", "not reachable",
    "there is no path",
})
_LEADING = re.compile(r"(yes|no)\b")


def shortest_path_length(edges: Iterable[Iterable[int]], source: int, target: int) -> int | None:
    """The number of edges on a shortest path from ``source`` to ``target`` in the undirected
    graph ``edges``, or ``None`` when there is none (breadth-first search).

    Example:
        >>> shortest_path_length([(0, 1), (1, 2)], 0, 2), shortest_path_length([(0, 1)], 0, 2)
        (2, None)
    """
    return _distances(_adjacency(edges), source).get(target)


def _adjacency(edges: Iterable[Iterable[int]]) -> dict[int, set[int]]:
    adj: dict[int, set[int]] = {}
    for u, v in edges:
        adj.setdefault(u, set()).add(v)
        adj.setdefault(v, set()).add(u)
    return adj


def _distances(adj: dict[int, set[int]], source: int) -> dict[int, int]:
    dist = {source: 0}
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in adj.get(u, ()):
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


class ConnectivitySuite(Suite):
    """s-t connectivity on random **undirected** graphs, given as an edge list.

    Half the tasks of a batch are connected, with the shortest s-t path exactly
    ``path_length`` edges long; the other half are not (for an odd count, a seeded coin
    decides the extra one). A disconnected task is built like a connected one with one edge
    of the s-t path cut and no edge across the cut, so both look alike: s and t each sit on a
    chain, and the edge counts match. The remaining edges are random; in a connected task
    none of them makes a shorter s-t path. Difficulty is ``min(path_length / 10, 1)``.

    Args:
        nodes: Nodes in each graph, numbered ``0`` to ``nodes - 1`` (3 to 200).
        path_length: The s-t shortest-path length, or an inclusive ``(min, max)`` range drawn
            from per task; from 1 to ``nodes - 1``.
        edges: Edges per graph (default ``nodes``); from the largest ``path_length`` to
            ``nodes * (nodes - 1) / 2``. A target: a graph gets fewer when the constraints
            above leave no room for more.

    Raises:
        ConfigError: A parameter is out of range.

    Example:
        >>> task = ConnectivitySuite(nodes=6, path_length=2).generate(1)[0]
        >>> task.answer in ("yes", "no")
        True
    """

    name = "connectivity"

    def __init__(self, nodes: int = 12, path_length: IntRange = 4, edges: int | None = None):
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 3 <= nodes <= MAX_NODES:
            raise ConfigError(f"nodes must be an integer from 3 to {MAX_NODES}, got {nodes!r}")
        self.nodes = nodes
        self.path_length = int_range("path_length", path_length, low=1, high=nodes - 1)
        edges = nodes if edges is None else edges
        most = nodes * (nodes - 1) // 2
        if (
            isinstance(edges, bool) or not isinstance(edges, int)
            or not self.path_length[1] <= edges <= most
        ):
            raise ConfigError(
                f"edges must be an integer from path_length ({self.path_length[1]}) to "
                f"{most} for {nodes} nodes, got {edges!r}"
            )
        self.edges = edges

    def generate(self, n: int, *, seed: int = 0) -> list[Task]:
        """``n`` graphs, half connected (see :meth:`Suite.generate`)."""
        rng = random.Random(f"connectivity:{seed}")
        n = check_count(n)
        labels = [True] * (n // 2) + [False] * (n // 2)
        if n % 2:
            labels.append(rng.random() < 0.5)
        rng.shuffle(labels)
        return distinct_draws(
            self.name, n, lambda i: self._one(rng, f"{self.name}/{seed}/{i}", labels[i]))

    def _one(self, rng: random.Random, task_id: str, connected: bool) -> Task:
        length = rng.randint(*self.path_length)
        order = list(range(self.nodes))
        rng.shuffle(order)
        path = order[: length + 1]
        source, target = path[0], path[-1]
        adj: dict[int, set[int]] = {v: set() for v in order}
        edges: list[tuple[int, int]] = []

        def add(u: int, v: int) -> None:
            adj[u].add(v)
            adj[v].add(u)
            edges.append((u, v) if rng.random() < 0.5 else (v, u))

        side: dict[int, int] | None = None
        if connected:
            for u, v in itertools.pairwise(path):
                add(u, v)
        else:
            cut = rng.randrange(length)  # the path edge (path[cut], path[cut + 1]) is left out
            for i in range(length):
                if i != cut:
                    add(path[i], path[i + 1])
            side = {v: 0 for v in path[: cut + 1]} | {v: 1 for v in path[cut + 1:]}
            side |= {v: rng.randrange(2) for v in order[length + 1:]}

        pairs = [(u, v) for u in range(self.nodes) for v in range(u + 1, self.nodes)]
        rng.shuffle(pairs)
        far = self.nodes  # longer than any path
        from_s, from_t = _distances(adj, source), _distances(adj, target)
        for u, v in pairs:
            if len(edges) >= self.edges:
                break
            if v in adj[u]:
                continue
            if side is not None:
                if side[u] != side[v]:
                    continue
            else:
                via_uv = from_s.get(u, far) + 1 + from_t.get(v, far)
                via_vu = from_s.get(v, far) + 1 + from_t.get(u, far)
                if min(via_uv, via_vu) < length:
                    continue  # would shorten the s-t path
            add(u, v)
            if side is None:
                from_s, from_t = _distances(adj, source), _distances(adj, target)

        rng.shuffle(edges)
        edge_text = "\n".join(f"{u} - {v}" for u, v in edges)
        question = (
            f"Below is an undirected graph with {self.nodes} nodes, numbered 0 to "
            f"{self.nodes - 1}. Each line is an edge between two nodes.\n\n{edge_text}\n\n"
            f"Is there a path from node {source} to node {target}? Follow the edges step by "
            f"step, then answer yes or no. {ANSWER_LINE}"
        )
        return Task(
            id=task_id, suite=self.name, question=question,
            answer="yes" if connected else "no", difficulty=min(length / 10, 1.0),
            metadata={
                "nodes": self.nodes, "edges": [list(e) for e in edges], "source": source,
                "target": target, "path_length": length, "connected": connected,
            },
        )

    def check(self, task: Task, response: str) -> bool:
        """The extracted answer says yes (``yes``/``true``/``connected``/...) or no
        (``no``/``false``/``not connected``/...), and that is right. Only the extracted
        answer counts, not the reasoning before it."""
        answer = normalize_answer(extract_answer(response))
        if answer in _YES:
            said = "yes"
        elif answer in _NO:
            said = "no"
        else:
            match = _LEADING.match(answer)  # "yes, through node 3"
            if match is None:
                return False
            said = match.group(1)
        return said == task.answer
