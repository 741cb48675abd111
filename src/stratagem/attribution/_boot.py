"""Weighted least squares for many bootstrap resamples at once, from second moments.

A resample with replacement is the same as the full sample with integer weights (how many
times each run, or each cluster of runs, was drawn). Every OLS quantity the analyses need
(R² of any subset of columns, slopes) is a function of the weighted covariance matrix of
``[X, y]``. So the per-cluster outer products ``[1, x, y] ⊗ [1, x, y]`` are summed once, and
one matrix product with the ``(n_boot, n_clusters)`` weight matrix gives every resample's
moments; the regressions then run on ``p x p`` matrices, batched over resamples, instead of
on ``n x p`` ones. That is what makes 1,000 resamples of 5,000 runs take well under a second.

Rank-deficient resamples (a rare topology that was not drawn) are handled as ``lstsq``
does: a pseudo-inverse, i.e. the minimum-norm solution, so R² stays the projection's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem.attribution._design import FloatArray, IntArray
from stratagem.attribution._types import Interval
from stratagem.errors import ConfigError

__all__ = [
    "Moments",
    "cluster_codes",
    "interval",
    "moments",
    "projection",
]

_EIG_RTOL = 1e-9
"""Eigenvalues below this fraction of the largest count as zero (columns are standardised)."""

_MAX_COLUMNS = 60
"""Per run, ``(columns + 2)**2`` moments are kept; past this many columns that gets large."""

_CELLS_PER_CHUNK = 4_000_000
"""Bootstrap weights are drawn in chunks of at most this many (resample, cluster) cells."""


class Moments:
    """Weighted covariance matrices of standardised ``[X, y]``: the full sample, then resamples.

    Attributes:
        cov: ``(1 + n_boot, p + 1, p + 1)``; index 0 is the full sample, the last row and
            column are the outcome.
        scale: Standard deviations that standardised the ``p`` columns of ``X``.
    """

    def __init__(self, cov: FloatArray, scale: FloatArray) -> None:
        self.cov = cov
        self.scale = scale

    def r2(self, idx: npt.NDArray[np.intp]) -> FloatArray:
        """R² of the regression of ``y`` on the columns ``idx`` (with an intercept), per sample."""
        if idx.size == 0:
            return np.zeros(self.cov.shape[0])
        sxx = self.cov[:, idx[:, None], idx[None, :]]
        sxy = self.cov[:, idx, -1]
        syy = self.cov[:, -1, -1]
        _, a, inv = projection(sxx, sxy)
        explained = np.sum(a * a * inv, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = np.where(syy > 0, explained / syy, np.nan)
        return out

    def slopes(self) -> FloatArray:
        """OLS slopes of ``y`` on all columns, in the columns' original units, per sample."""
        p = self.cov.shape[1] - 1
        vecs, a, inv = projection(self.cov[:, :p, :p], self.cov[:, :p, -1])
        beta_std: FloatArray = np.einsum("bmk,bk->bm", vecs, a * inv)
        out: FloatArray = beta_std / self.scale
        return out


def projection(
    sxx: FloatArray, sxy: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Batched pseudo-inverse pieces: eigenvectors, ``V'sxy``, and inverted eigenvalues."""
    evals, vecs = np.linalg.eigh(sxx)
    tol = _EIG_RTOL * np.maximum(evals[..., -1:], np.finfo(np.float64).tiny)
    safe = np.where(evals > tol, evals, 1.0)
    inv: FloatArray = np.where(evals > tol, 1.0 / safe, 0.0)
    a: FloatArray = np.einsum("bmk,bm->bk", vecs, sxy)
    return vecs, a, inv


def cluster_codes(df: pd.DataFrame, cluster: str | None, *, what: str) -> tuple[IntArray, int]:
    """Per row, the index of the resampling unit: the row itself, or its cluster's."""
    if cluster is None:
        return np.arange(len(df), dtype=np.int64), len(df)
    if cluster not in df.columns:
        raise ConfigError(f"{what}: cluster column {cluster!r} is missing from the run table")
    codes, uniques = pd.factorize(df[cluster].astype(object).fillna("<NA>").astype(str))
    return np.asarray(codes, dtype=np.int64), len(uniques)


def moments(
    x: FloatArray,
    y: FloatArray,
    codes: IntArray,
    n_clusters: int,
    *,
    n_boot: int,
    seed: int,
    what: str,
) -> Moments:
    """Weighted covariances of ``[x, y]`` for the full sample and ``n_boot`` resamples.

    Args:
        x: ``n x p`` regressors (no intercept column; one is implied).
        y: The outcome.
        codes: Per row, its resampling unit (see :func:`cluster_codes`).
        n_clusters: How many units there are; each resample draws this many with replacement.
        n_boot: Resamples.
        seed: Seeds the resampling; the same seed gives the same resamples.
        what: The analysis, for error messages.

    Raises:
        ConfigError: More than 60 columns (a categorical variable with very many levels).
    """
    if x.shape[1] > _MAX_COLUMNS:
        raise ConfigError(
            f"{what}: the regression has {x.shape[1]} columns, more than {_MAX_COLUMNS}; a "
            "categorical variable has too many levels (use e.g. difficulty, not task_id)"
        )
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.column_stack([np.ones(len(y)), (x - mean) / scale, y - y.mean()])
    q = z.shape[1]
    outer = (z[:, :, None] * z[:, None, :]).reshape(len(y), q * q)
    if n_clusters == len(y):  # one run per unit: codes are 0..n-1 (see cluster_codes)
        per_cluster = outer[np.argsort(codes)]
    else:
        order = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.diff(codes[order], prepend=-1))
        per_cluster = np.add.reduceat(outer[order], starts, axis=0)
    raw = [per_cluster.sum(axis=0, keepdims=True)]
    for weights in _weights(n_clusters, n_boot, seed):
        raw.append(weights @ per_cluster)
    sums = np.concatenate(raw).reshape(-1, q, q)
    count = sums[:, 0, 0]
    means = sums[:, 0, 1:] / count[:, None]
    cov = sums[:, 1:, 1:] / count[:, None, None] - means[:, :, None] * means[:, None, :]
    return Moments(cov, scale)


def _weights(n_clusters: int, n_boot: int, seed: int) -> Iterator[FloatArray]:
    """How often each unit is drawn, per resample, in chunks (reproducible for a seed)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CELLS_PER_CHUNK // max(n_clusters, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n_clusters, size=(b, n_clusters))
        offsets = (np.arange(b) * n_clusters)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_clusters)
        yield counts.reshape(b, n_clusters).astype(np.float64)
        done += b


def interval(estimate: float, draws: FloatArray) -> Interval:
    """The estimate with the 2.5th and 97.5th percentiles of its bootstrap ``draws``.

    With no usable draw (``n_boot=0``, or every resample degenerate) the bounds are NaN.
    """
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(float(estimate), float(low), float(high))
