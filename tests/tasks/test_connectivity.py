"""The s-t connectivity suite: answers right by BFS, balanced, exact path length."""

from __future__ import annotations

import re
from collections import deque

import pytest

from stratagem.errors import ConfigError
from stratagem.tasks import ConnectivitySuite, Task, shortest_path_length


def _bfs(edges: list[tuple[int, int]], s: int, t: int) -> int | None:
    """An independent BFS over the edges as printed in the question."""
    adj: dict[int, list[int]] = {}
    for u, v in edges:
        adj.setdefault(u, []).append(v)
        adj.setdefault(v, []).append(u)
    seen, queue = {s: 0}, deque([s])
    while queue:
        u = queue.popleft()
        for v in adj.get(u, []):
            if v not in seen:
                seen[v] = seen[u] + 1
                queue.append(v)
    return seen.get(t)


def _from_question(task: Task) -> tuple[list[tuple[int, int]], int, int]:
    edges = [(int(a), int(b)) for a, b in re.findall(r"^(\d+) - (\d+)$", task.question, re.M)]
    match = re.search(r"path from node (\d+) to node (\d+)\?", task.question)
    assert match is not None
    return edges, int(match.group(1)), int(match.group(2))


def test_same_seed_same_graphs() -> None:
    suite = ConnectivitySuite(nodes=10, path_length=(2, 5))
    assert suite.generate(12, seed=4) == suite.generate(12, seed=4)
    assert suite.generate(12, seed=4) != suite.generate(12, seed=5)


@pytest.mark.parametrize(
    ("nodes", "path_length", "edges"),
    [(12, 4, None), (8, 7, None), (20, (2, 9), 30), (6, 1, 15), (30, 6, 25)],
)
def test_answers_are_right_by_bfs_at_the_exact_length(
    nodes: int, path_length: int | tuple[int, int], edges: int | None
) -> None:
    suite = ConnectivitySuite(nodes=nodes, path_length=path_length, edges=edges)
    for seed in range(15):
        for task in suite.generate(8, seed=seed):
            printed, s, t = _from_question(task)
            assert sorted(map(sorted, printed)) == sorted(map(sorted, task.metadata["edges"]))
            assert len({frozenset(e) for e in printed}) == len(printed)  # no duplicate edges
            assert all(0 <= v < nodes for e in printed for v in e)
            assert (s, t) == (task.metadata["source"], task.metadata["target"])
            distance = _bfs(printed, s, t)
            assert distance == shortest_path_length(printed, s, t)
            if task.answer == "yes":
                assert distance == task.metadata["path_length"]
            else:
                assert task.answer == "no"
                assert distance is None


def test_balanced_and_edge_counts_alike() -> None:
    suite = ConnectivitySuite()
    tasks = suite.generate(200, seed=1)
    answers = [t.answer for t in tasks]
    assert answers.count("yes") == answers.count("no") == 100
    assert answers[:10] != ["yes"] * 5 + ["no"] * 5  # shuffled, not blocked
    assert {len(t.metadata["edges"]) for t in tasks} == {12}
    odd = [t.answer for t in suite.generate(7, seed=2)]
    assert abs(odd.count("yes") - odd.count("no")) == 1


def test_checker_reads_yes_no_synonyms_from_the_answer_only() -> None:
    suite = ConnectivitySuite()
    for task in suite.generate(20, seed=3):
        right, wrong = (("yes", "True", "connected", "Yes, via node 3")
                        if task.answer == "yes" else
                        ("no", "False", "not connected", "No.", "disconnected"),
                        "no" if task.answer == "yes" else "yes")
        for said in right:
            assert suite.check(task, f"Reasoning...\nAnswer: {said}"), said
        assert not suite.check(task, f"Answer: {wrong}")
        assert not suite.check(task, "Answer: maybe")
        # The word "yes"/"no" in the reasoning does not count, only the final answer.
        assert not suite.check(task, f"I think {task.answer}.\nAnswer: {wrong}")


def test_difficulty_grows_with_path_length() -> None:
    short = ConnectivitySuite(path_length=2).generate(4)
    long = ConnectivitySuite(nodes=20, path_length=8).generate(4)
    difficulties = {t.difficulty for t in short}, {t.difficulty for t in long}
    assert difficulties == ({0.2}, {0.8})


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"nodes": 2}, "nodes"), ({"nodes": 12, "path_length": 12}, "path_length"),
        ({"path_length": 0}, "path_length"), ({"path_length": 5, "edges": 4}, "edges"),
        ({"nodes": 5, "path_length": 2, "edges": 11}, "edges"), ({"nodes": 1.5}, "nodes"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ConnectivitySuite(**params)  # type: ignore[arg-type]
