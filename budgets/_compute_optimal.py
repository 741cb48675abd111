"""ComputeOptimal: choose per query how to go on, from a cheap probe of it.

Snell et al. 2024 ("Scaling LLM Test-Time Compute Optimally...") pick the test-time strategy
per prompt from an estimate of its difficulty and report more than 4x the efficiency of
best-of-N. Here:

1. **Probe.** The first ``probe`` samples of a query (branch seeds ``seed``, ``seed + 1``, ...,
   the same samples every other sampling topology draws first), each checked by the task's
   verifier when it has one. Their signal is a *bin*, by ``probe_signal``: ``verified`` when a
   probe sample was accepted, always first (nothing beats a verified answer); else

   * ``agreement``: ``agree<a>/<k>``, ``a`` the votes of the leading answer among the ``k``
     probe samples (``agree0/1``: no readable answer);
   * ``logprob``: ``lp<i>/<n>``, the probe samples' mean token log-probability (the mean of
     each reply's mean, asked with ``logprobs``) in the ``i``-th of ``n = logprob_bins``
     quantile bins (1: least confident), with edges fitted on the calibration split's
     unverified probes and saved in the table; ``lp?`` when the server sent none (unknown is
     not a bin of its own confidence);
   * ``both``: the two crossed, ``agree<a>/<k>,lp<i>/<n>``.

   The default stays ``agreement`` (results and ``bench/efficiency.py`` figures stay
   comparable). With the usual small calibration split (tens of queries) ``logprob`` is the
   one to turn on: at ``probe = 1`` agreement says nothing (every unverified probe is
   ``agree1/1``), while terciles of the log-probability give three bins of a third of the
   queries each, by construction; crossing them with agreement at ``k`` probe samples makes
   ``3k`` cells of one or two queries, where the shrinkage toward the pooled rate decides
   more than the data. ``both`` is for calibration splits of hundreds of queries.
2. **Options.** ``stop`` (answer from the probe), and per sample cap ``m`` in ``samples``:
   ``sequential:m`` (with a verifier: one more sample at a time until one is accepted or ``m``
   are drawn), ``vote:m`` (without: ``m`` samples, majority) and ``ac:m`` (without:
   Adaptive-Consistency up to ``m``). Opt-in (``options``), beyond sampling: ``refine:r``
   (the ``refine`` topology's loop after the probe: ``r`` revisions of the latest answer
   against the judge's critique, or the verifier's verdict, stopping when one is accepted)
   and ``decompose`` (the ``decompose_solve`` topology: decomposer, solvers over the
   subtasks, aggregation; its answer is the aggregate's).
3. **A small model, fitted once on a calibration split** (tasks drawn apart from the
   evaluated ones): each calibration query's pool of samples is drawn once, and every
   sampling option's outcome and tokens are read off that pool, since each is a prefix rule
   over the same seeded samples. ``refine:r`` and ``decompose`` cannot be read off a pool:
   the calibration *runs* them, after the same probe, on every calibration query whose probe
   was not verified (a verified probe stops whatever was chosen), and their tokens (every
   role's, the probe's included, as for every option) count in the calibration cost reported
   apart. (Grid seeds closer than the largest cap share samples between pools, branch ``i``
   of seed ``s`` being branch ``i - 1`` of seed ``s + 1``, which a run option's calls do not:
   use seeds far apart, as ``bench/efficiency.py`` does.) Expected accuracy per (bin, option)
   is the observed rate shrunk toward the option's rate over all bins (a Beta prior of
   weight ``prior``); expected tokens are the observed mean. :class:`CalibrationTable` is
   saved as JSON next to the results and reused.
4. **Choice at the batch's total.** Maximising the batch's expected accuracy subject to its
   total is a knapsack over queries; its Lagrangian relaxation prices tokens at ``price`` and
   picks per query ``argmax E[accuracy] - price x E[tokens]``. ``price`` is set on the
   calibration split so the expected mean tokens per query equals the per-query budget, so the
   total is met in expectation over the calibration mix of bins (not to the token; a run's hard
   cap is ``cap`` x the budget). Each choice is recorded in the ledger with its reason
   (:func:`record_choice`), like a :class:`~stratagem.budgets.Transfer`.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from stratagem.budgets._consistency import AdaptiveConsistency
from stratagem.budgets._entries import Transfer
from stratagem.budgets._ledger import TokenLedger
from stratagem.budgets._policies import apportion
from stratagem.errors import ConfigError

__all__ = [
    "CalibrationTable",
    "ComputeOptimal",
    "PoolSample",
    "ProbeSignal",
    "StrategyChoice",
    "logprob_edges",
    "option_outcome",
    "probe_bin",
    "probe_logprob",
    "record_choice",
]

ProbeSignal = Literal["agreement", "logprob", "both"]
"""What a probe's bin is made of (see the module docstring)."""

_SIGNALS: tuple[str, ...] = get_args(ProbeSignal)
_KINDS = ("stop", "sequential", "vote", "ac", "refine", "decompose")
"""Every kind of option; ``refine`` and ``decompose`` are run, the others read off a pool."""
_POOLED = ("stop", "sequential", "vote", "ac")
_RUN = ("refine", "decompose")


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One sample of a calibration query (or of a probe), in branch order.

    Attributes:
        answer: The normalized answer (``""``: none readable).
        correct: Whether the task's checker accepts it.
        tokens: Billed tokens of the call.
        logprob: The reply's mean token log-probability, when asked for and sent
            (``None``: unknown).
    """

    answer: str
    correct: bool
    tokens: int
    logprob: float | None = None


def probe_logprob(values: Sequence[float | None]) -> float | None:
    """The probe's log-probability signal: the mean of its samples' known means
    (``None`` when none is known).

    Example:
        >>> probe_logprob([-0.5, None, -1.5]), probe_logprob([None])
        (-1.0, None)
    """
    known = [v for v in values if v is not None and math.isfinite(v)]
    return sum(known) / len(known) if known else None


def logprob_edges(values: Sequence[float | None], bins: int) -> list[float]:
    """Edges splitting the known ``values`` into ``bins`` bins of (nearly) equal counts.

    Fewer distinct values than bins give fewer edges (a bin is never empty by
    construction); no known value gives none (one bin).

    Example:
        >>> logprob_edges([-3.0, -2.0, -1.0, -0.5, -0.2, -0.1], 3)
        [-1.0, -0.2]
    """
    known = sorted(v for v in values if v is not None and math.isfinite(v))
    edges: list[float] = []
    for i in range(1, bins):
        at = (len(known) * i) // bins
        if 0 < at < len(known) and (not edges or known[at] > edges[-1]):
            edges.append(known[at])
    return edges


def probe_bin(answers: Sequence[str], verified: Sequence[bool] | None, *,
              signal: ProbeSignal = "agreement", logprob: float | None = None,
              edges: Sequence[float] = ()) -> str:
    """The difficulty bin of a probe: ``verified``, else by ``signal`` (module docstring).

    Args:
        answers: The probe samples' normalized answers (``""``: none).
        verified: Each sample's verifier verdict, or ``None`` for a task without a verifier.
        signal: ``agreement``, ``logprob`` or ``both``.
        logprob: The probe's mean token log-probability (:func:`probe_logprob`).
        edges: The calibration split's bin edges (:func:`logprob_edges`).

    Example:
        >>> probe_bin(["b", "b"], None), probe_bin(["x"], [False]), probe_bin(["x"], [True])
        ('agree2/2', 'agree1/1', 'verified')
        >>> [probe_bin(["x"], [False], signal="logprob", logprob=v, edges=[-1.0, -0.2])
        ...  for v in (-2.0, -0.5, -0.1, None)]
        ['lp1/3', 'lp2/3', 'lp3/3', 'lp?']
    """
    if verified is not None and any(verified):
        return "verified"
    votes = Counter(a for a in answers if a)
    agree = f"agree{max(votes.values(), default=0)}/{len(answers)}"
    if signal == "agreement":
        return agree
    lp = "lp?" if logprob is None else f"lp{bisect_right(edges, logprob) + 1}/{len(edges) + 1}"
    return lp if signal == "logprob" else f"{agree},{lp}"


def option_outcome(option: str, pool: Sequence[PoolSample], *, probe: int, verifier: bool,
                   rule: AdaptiveConsistency | None = None) -> tuple[bool, int]:
    """``(correct, tokens)`` of ``option`` on a query whose samples are ``pool``.

    The probe's samples count in the tokens of every option (they were drawn).
    """
    def majority(samples: Sequence[PoolSample]) -> PoolSample | None:
        votes = Counter(s.answer for s in samples if s.answer)
        if not votes:
            return samples[0] if samples else None
        top = max(votes.values())
        return next(s for s in samples if s.answer and votes[s.answer] == top)

    def answer_of(samples: Sequence[PoolSample]) -> bool:
        if verifier:
            return any(s.correct for s in samples)  # the verifier picks an accepted one
        chosen = majority(samples)
        return chosen is not None and chosen.correct

    head = list(pool[:probe])
    if option == "stop" or (verifier and any(s.correct for s in head)):
        return answer_of(head), sum(s.tokens for s in head)
    kind, _, m_text = option.partition(":")
    m = min(int(m_text), len(pool))
    if kind == "sequential":
        drawn = next((i + 1 for i, s in enumerate(pool[:m]) if s.correct), m)
        drawn = max(drawn, probe)
        return answer_of(pool[:drawn]), sum(s.tokens for s in pool[:drawn])
    if kind == "vote":
        return answer_of(pool[:max(m, probe)]), sum(s.tokens for s in pool[:max(m, probe)])
    if kind == "ac":
        ac = AdaptiveConsistency(threshold=rule.threshold if rule else 0.95,
                                 max_samples=max(m, 1),
                                 criterion=rule.criterion if rule else "beta")
        n = max(probe, 1)
        while n < m and not ac.decide([s.answer for s in pool[:n]]).stop:
            n += 1
        return answer_of(pool[:n]), sum(s.tokens for s in pool[:n])
    if kind in _RUN:
        raise ConfigError(f"option {option!r} is run on the calibration queries, not read "
                          "off a sample pool")
    raise ConfigError(f"unknown option {option!r}: use stop, sequential:M, vote:M, ac:M, "
                      "refine:R or decompose")


@dataclass(frozen=True, slots=True)
class StrategyChoice:
    """What the policy chose for one query, and why.

    Attributes:
        option: ``stop``, ``sequential:M``, ``vote:M``, ``ac:M``, ``refine:R`` or
            ``decompose``.
        bin: The probe's bin.
        expected_accuracy: The table's expected accuracy of the option in the bin.
        expected_tokens: Its expected tokens per query (probe included).
        reason: The choice in words, for the ledger and the audit.
    """

    option: str
    bin: str
    expected_accuracy: float
    expected_tokens: float
    reason: str

    @property
    def kind(self) -> str:
        """``stop``, ``sequential``, ``vote``, ``ac``, ``refine`` or ``decompose``."""
        return self.option.partition(":")[0]

    @property
    def samples(self) -> int:
        """The cap on parallel samples (0 for an option that samples no more: ``stop``,
        ``refine:R``, ``decompose``)."""
        return int(self.option.partition(":")[2]) if self.kind in ("sequential", "vote",
                                                                     "ac") else 0


@dataclass
class CalibrationTable:
    """Expected accuracy and tokens per (probe bin, option), fitted on a calibration split.

    Attributes:
        probe: Probe samples per query.
        verifier: Whether the tasks have a verifier (which options apply).
        options: The options, cheapest first.
        cells: ``bin -> option -> [correct, queries, tokens]`` sums.
        prior: Weight of the shrinkage toward an option's rate over all bins.
        queries: Calibration queries (task x seed) behind the table.
        meta: Where it came from (suite, tasks, seeds), for the JSON file.
        signal: What the probe's bins are made of (``agreement``, ``logprob``, ``both``).
        edges: The log-probability bin edges fitted on the calibration split (empty for
            ``agreement``).
    """

    probe: int
    verifier: bool
    options: list[str]
    cells: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    prior: float = 2.0
    queries: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    signal: ProbeSignal = "agreement"
    edges: list[float] = field(default_factory=list)

    def bin_for(self, answers: Sequence[str], verified: Sequence[bool] | None,
                logprobs: Sequence[float | None] = ()) -> str:
        """The bin of a probe with these answers, verdicts and per-sample mean
        log-probabilities, by this table's signal and edges."""
        return probe_bin(answers, verified if self.verifier else None, signal=self.signal,
                         logprob=probe_logprob(logprobs), edges=self.edges)

    @classmethod
    def fit(cls, pools: Sequence[Sequence[PoolSample]], *, probe: int, samples: Sequence[int],
            verifier: bool, rule: AdaptiveConsistency | None = None, prior: float = 2.0,
            meta: Mapping[str, Any] | None = None, signal: ProbeSignal = "agreement",
            logprob_bins: int = 3, kinds: Sequence[str] = _POOLED,
            runs: Mapping[str, Sequence[tuple[bool, int] | None]] | None = None,
            ) -> CalibrationTable:
        """Read every sampling option's outcome off each calibration query's sample pool,
        and take the run options' outcomes from ``runs``.

        With a log-probability ``signal``, the bin edges are the quantiles of the probes'
        log-probabilities over the calibration queries whose probe was not verified (the
        only ones whose bin decides anything).

        Args:
            kinds: The kinds of sampling option offered (``sequential`` applies with a
                verifier, ``vote`` and ``ac`` without).
            runs: Per run option (``refine:R``, ``decompose``), ``(correct, tokens)`` of
                running it on each pool's query, in the order of ``pools`` (``None``: not
                run, e.g. the probe was verified: such a query counts the ``stop`` outcome,
                as every option stops at a verified probe; a query that was to be run and
                failed is left out of that option's cells).

        Raises:
            ConfigError: With no pool, or a pool shorter than the largest cap, or an
                unknown signal, or ``runs`` not aligned with ``pools``.
        """
        if signal not in _SIGNALS:
            raise ConfigError(f"probe_signal must be one of {', '.join(_SIGNALS)}, "
                              f"got {signal!r}")
        if not pools:
            raise ConfigError("compute_optimal needs at least one calibration query")
        caps = sorted({int(m) for m in samples if int(m) > probe})
        need = max([probe, *caps])
        if any(len(p) < need for p in pools):
            raise ConfigError(f"every calibration pool needs {need} samples")
        offered = [k for k in (("sequential",) if verifier else ("vote", "ac")) if k in kinds]
        runs = dict(runs or {})
        if any(len(outcomes) != len(pools) for outcomes in runs.values()):
            raise ConfigError("compute_optimal: every run option needs an outcome per pool")
        options = ["stop", *(f"{k}:{m}" for m in caps for k in offered), *runs]
        table = cls(probe, verifier, options, prior=prior, queries=len(pools),
                    meta=dict(meta or {}), signal=signal)
        if signal != "agreement":
            table.edges = logprob_edges(
                [probe_logprob([s.logprob for s in p[:probe]]) for p in pools
                 if not (verifier and any(s.correct for s in p[:probe]))], logprob_bins)
        for i, pool in enumerate(pools):
            head = pool[:probe]
            b = table.bin_for([s.answer for s in head], [s.correct for s in head],
                              [s.logprob for s in head])
            row = table.cells.setdefault(b, {o: [0.0, 0.0, 0.0] for o in options})
            for o in options:
                if o in runs:
                    ran = runs[o][i]
                    if ran is None and b != "verified":
                        continue  # to be run, and it failed: unknown, not a failure
                    ok, tokens = ran if ran is not None else option_outcome(
                        "stop", pool, probe=probe, verifier=verifier)
                else:
                    ok, tokens = option_outcome(o, pool, probe=probe, verifier=verifier,
                                                rule=rule)
                row[o][0] += ok
                row[o][1] += 1
                row[o][2] += tokens
        return table

    @property
    def run_options(self) -> list[str]:
        """The options the calibration ran (``refine:R``, ``decompose``)."""
        return [o for o in self.options if o.partition(":")[0] in _RUN]

    def share(self, b: str) -> float:
        """The calibration queries' share in bin ``b``."""
        row = self.cells.get(b)
        return 0.0 if not row or not self.queries else next(iter(row.values()))[1] / self.queries

    def expected(self, b: str, option: str) -> tuple[float, float]:
        """``(accuracy, tokens)`` expected of ``option`` for a query in bin ``b``; a bin the
        calibration never saw gets the option's rates over all bins."""
        pooled = [sum(r[option][i] for r in self.cells.values()) for i in range(3)]
        base = (pooled[0] + 1) / (pooled[1] + 2)
        mean_tokens = pooled[2] / pooled[1] if pooled[1] else 0.0
        cell = self.cells.get(b, {}).get(option)
        if not cell or not cell[1]:
            return base, mean_tokens
        return (cell[0] + self.prior * base) / (cell[1] + self.prior), cell[2] / cell[1]

    def best(self, b: str, price: float, cap: float | None = None) -> StrategyChoice:
        """The option maximising ``accuracy - price x tokens`` in bin ``b`` (within ``cap``
        expected tokens; cheapest first on ties)."""
        if b == "verified":  # every option stops at a verified probe: nothing to gain
            acc, tokens = self.expected(b, "stop")
            return StrategyChoice("stop", b, acc, tokens,
                                  f"compute_optimal: probe {b}: stop (a verified answer)")
        scored = []
        for o in self.options:
            if not any(r[o][1] for r in self.cells.values() if o in r):
                continue  # never observed (every calibration run of it failed)
            acc, tokens = self.expected(b, o)
            if cap is None or tokens <= cap or o == "stop":
                scored.append((acc - price * tokens, -tokens, o, acc, tokens))
        _, _, o, acc, tokens = max(scored)
        reason = (f"compute_optimal: probe {b}: {o} (expected accuracy {acc:.2f} at "
                  f"{tokens:.0f} tokens; price {price:.2e}/token; "
                  f"{self.queries} calibration queries)")
        return StrategyChoice(o, b, acc, tokens, reason)

    def mean_tokens(self, price: float, cap: float | None = None) -> float:
        """Expected tokens per query over the calibration mix when choosing at ``price``."""
        return sum(self.share(b) * self.best(b, price, cap).expected_tokens for b in self.cells)

    def price_for(self, budget: float, cap: float | None = None) -> float:
        """The smallest token price whose choices spend at most ``budget`` per query in
        expectation (0 when even the richest choices fit)."""
        if self.mean_tokens(0.0, cap) <= budget:
            return 0.0
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.mean_tokens(mid, cap) <= budget:
                hi = mid
            else:
                lo = mid
        return hi

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (see :meth:`from_json`)."""
        return {"kind": "stratagem-compute-optimal", "version": 1, "probe": self.probe,
                "verifier": self.verifier, "options": self.options, "cells": self.cells,
                "prior": self.prior, "queries": self.queries, "meta": self.meta,
                "signal": self.signal, "edges": self.edges}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CalibrationTable:
        """Read what :meth:`to_json` wrote.

        Raises:
            ConfigError: If ``data`` is not such a table.
        """
        if data.get("kind") != "stratagem-compute-optimal" or data.get("version") != 1:
            raise ConfigError("not a stratagem compute_optimal calibration table")
        signal = data.get("signal", "agreement")  # (tables written before the signal)
        if signal not in _SIGNALS:
            raise ConfigError(f"calibration table: unknown probe signal {signal!r}")
        return cls(int(data["probe"]), bool(data["verifier"]), list(data["options"]),
                   {b: {o: [float(x) for x in v] for o, v in row.items()}
                    for b, row in data["cells"].items()},
                   float(data["prior"]), int(data["queries"]), dict(data.get("meta", {})),
                   signal, [float(x) for x in data.get("edges", [])])

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        """Read a table :meth:`save` wrote."""
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"{path}: not a readable compute_optimal table ({exc}); "
                              "delete it to calibrate again") from exc


@dataclass(frozen=True, slots=True)
class ComputeOptimal:
    """Per query, the option a probe and a calibration table say is worth its tokens.

    As an allocation policy it splits a batch uniformly: its savings and its reallocation
    happen inside runs, by choosing per query (see the module docstring).

    Attributes:
        probe: Probe samples per query.
        samples: Sample caps of the options past the probe.
        calibration: Calibration tasks per suite (each run at every seed of the grid).
        cap: A run's hard cap, as a multiple of the per-query budget.
        prior: Shrinkage weight of the table.
        threshold: Adaptive-Consistency threshold of the ``ac:M`` options.
        probe_signal: What the probe's bins are made of: ``agreement`` (the default),
            ``logprob`` or ``both`` (module docstring). A log-probability signal asks the
            probe's calls for ``logprobs``; a server that sends none puts every query in
            bin ``lp?``.
        logprob_bins: Quantile bins of the probe's log-probability (3: terciles).
        options: The kinds of option offered: ``stop`` (required), ``sequential`` (with a
            verifier), ``vote`` and ``ac`` (without) at each cap in ``samples``; opt-in
            ``refine`` (at each count in ``rounds``) and ``decompose``, which the
            calibration must run (module docstring). The default is the sampling options
            only, as before they existed.
        rounds: Revisions of the ``refine:R`` options.
    """

    probe: int = 1
    samples: tuple[int, ...] = (2, 4, 8)
    calibration: int = 8
    cap: float = 2.0
    prior: float = 2.0
    threshold: float = 0.95
    probe_signal: ProbeSignal = "agreement"
    logprob_bins: int = 3
    options: tuple[str, ...] = _POOLED
    rounds: tuple[int, ...] = (2,)
    name: str = "compute_optimal"

    def __post_init__(self) -> None:
        if not 1 <= self.probe <= 16:
            raise ConfigError(f"compute_optimal needs 1 <= probe <= 16, got {self.probe}")
        if not self.samples or any(not self.probe < m <= 256 for m in self.samples):
            raise ConfigError(f"compute_optimal needs sample caps above probe ({self.probe}) "
                              f"and at most 256, got {list(self.samples)}")
        if self.calibration < 1 or self.cap < 1 or self.prior < 0:
            raise ConfigError("compute_optimal needs calibration >= 1, cap >= 1, prior >= 0")
        if self.probe_signal not in _SIGNALS:
            raise ConfigError(f"compute_optimal probe_signal must be one of "
                              f"{', '.join(_SIGNALS)}, got {self.probe_signal!r}")
        if not 1 <= self.logprob_bins <= 10:
            raise ConfigError(f"compute_optimal needs 1 <= logprob_bins <= 10, "
                              f"got {self.logprob_bins}")
        unknown = [k for k in self.options if k not in _KINDS]
        if unknown or "stop" not in self.options:
            raise ConfigError(f"compute_optimal options are kinds among {', '.join(_KINDS)}, "
                              f"stop included; got {list(self.options)}")
        if not self.rounds or any(not 1 <= r <= 16 for r in self.rounds):
            raise ConfigError(f"compute_optimal needs refine rounds in 1..16, "
                              f"got {list(self.rounds)}")

    def run_options(self) -> list[str]:
        """The options the calibration must run, not read off a pool (``refine:R``,
        ``decompose``), in a stable order."""
        runs = [f"refine:{r}" for r in sorted(set(self.rounds))] if "refine" in self.options \
            else []
        return [*runs, *(["decompose"] if "decompose" in self.options else [])]

    def allocate(self, difficulties: Sequence[float | None], total: int) -> list[int]:
        """Equal shares (the choice per query happens inside each run)."""
        return apportion([1.0] * len(difficulties), total)


def record_choice(ledger: TokenLedger, run_id: str, choice: StrategyChoice, *,
                  tokens: int, node: str = "choose") -> Transfer:
    """Record a policy's choice for one run as a ledger event with its reason.

    It is a :class:`~stratagem.budgets.Transfer` from the pseudo-role ``policy`` to the
    solver of the tokens the choice lets the run spend, so ``stratagem audit`` lists it with
    the other budget moves. (The one place to change when decisions get their own event.)
    """
    event = Transfer(run_id=run_id, from_role="policy", to_role="solver",
                     tokens=max(1, int(tokens)), reason=choice.reason, node=node)
    ledger.record_transfer(event)
    return event
