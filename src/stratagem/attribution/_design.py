"""From a run table to regression designs: checks, derived terms, dummies, rank pruning.

Every analysis in this package starts here, so a user's mistake (no rows, a column that is
not there, an outcome that never varies) fails the same way everywhere: a
:class:`~stratagem.errors.ConfigError` that names the column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from stratagem.errors import ConfigError

__all__ = [
    "Block",
    "Design",
    "FloatArray",
    "IntArray",
    "build_design",
    "categorical_block",
    "check_variance",
    "is_numeric",
    "outcome_values",
    "require_table",
    "spend_block",
    "spend_sources",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_RANK_TOL = 1e-8
"""A standardised column adds rank when its residual variance exceeds this (its own is 1)."""

_LOG_TOKENS = "log_tokens"
"""The derived spend term ``log2(1 + tokens_total)``."""


@dataclass(frozen=True, slots=True)
class Block:
    """One group of regression columns that share a single Shapley value.

    Attributes:
        name: The group's name (``spend``, a coordination variable, ``controls``).
        sources: The run-table columns behind it.
        columns: One name per column of ``matrix`` (``topology=tree``, ``log_tokens``...).
        matrix: ``n x len(columns)`` values.
        categorical: Source -> whether it was dummy-coded.
    """

    name: str
    sources: tuple[str, ...]
    columns: tuple[str, ...]
    matrix: FloatArray
    categorical: dict[str, bool]


@dataclass(frozen=True, slots=True)
class Design:
    """A full-rank design: kept blocks, and why the others were left out.

    Attributes:
        blocks: Blocks that kept at least one column, in the order given.
        skipped: Group -> why it has no column of its own.
    """

    blocks: tuple[Block, ...]
    skipped: dict[str, str]

    @property
    def matrix(self) -> FloatArray:
        """All kept columns side by side."""
        return np.hstack([b.matrix for b in self.blocks])

    @property
    def slices(self) -> list[npt.NDArray[np.intp]]:
        """Per block, the indices of its columns in :attr:`matrix`."""
        out: list[npt.NDArray[np.intp]] = []
        start = 0
        for b in self.blocks:
            out.append(np.arange(start, start + len(b.columns), dtype=np.intp))
            start += len(b.columns)
        return out


def require_table(df: pd.DataFrame, columns: Iterable[str], *, what: str) -> None:
    """Fail with a :class:`ConfigError` unless ``df`` is a non-empty table with ``columns``.

    Args:
        df: The run table.
        columns: Columns the analysis reads.
        what: The analysis, for the message.

    Raises:
        ConfigError: ``df`` is not a DataFrame, has no rows, or lacks a column.
    """
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(
            f"{what} needs a pandas DataFrame of run records, got {type(df).__name__}"
        )
    if len(df) == 0:
        raise ConfigError(f"{what}: the run table is empty; run a sweep first")
    for col in columns:
        if col not in df.columns:
            raise ConfigError(
                f"{what}: column {col!r} is missing from the run table "
                "(its columns should be the fields of stratagem's RunRecord)"
            )


def spend_sources(names: Sequence[str]) -> list[str]:
    """The run-table columns that the spend terms ``names`` are computed from."""
    out: list[str] = []
    for name in names:
        if name == _LOG_TOKENS:
            out.append("tokens_total")
        elif name.startswith("log_"):
            out.append(name[len("log_"):])
        else:
            out.append(name)
    return out


def outcome_values(
    df: pd.DataFrame, outcome: str, *, what: str
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """The outcome as floats, and which rows have one (``correct=None``: no checker).

    Raises:
        ConfigError: The outcome is not boolean or numeric.
    """
    series = df[outcome]
    known = series.notna().to_numpy(dtype=bool)
    try:
        values = pd.to_numeric(series[known].astype(float)).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what}: outcome column {outcome!r} must be boolean or numeric ({exc})"
        ) from exc
    return values, known


def check_variance(y: FloatArray, outcome: str, *, what: str) -> None:
    """Fail unless the outcome varies (a constant outcome has no variance to attribute)."""
    if y.size == 0:
        raise ConfigError(f"{what}: no run has a value in outcome column {outcome!r}")
    if float(np.ptp(y)) == 0.0:
        raise ConfigError(
            f"{what}: outcome {outcome!r} has no variance (every run has {y[0]:g}); "
            "attribution needs runs that differ, e.g. both successes and failures"
        )


def is_numeric(series: pd.Series) -> bool:
    """Whether a column is treated as one continuous term (numbers, booleans)."""
    return bool(pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(
        series.dtype))


def spend_block(df: pd.DataFrame, names: Sequence[str], *, what: str) -> Block:
    """The spend group: ``log_tokens`` is ``log2(1 + tokens_total)``, ``log_<col>`` is
    ``log2(1 + <col>)``, any other name is a numeric column used as it is.

    ``1 +`` keeps runs that billed nothing (a refused first call) finite.
    """
    cols: list[FloatArray] = []
    for name, source in zip(names, spend_sources(names), strict=True):
        series = df[source]
        if not is_numeric(series):
            raise ConfigError(f"{what}: spend column {source!r} must be numeric")
        raw = series.to_numpy(dtype=np.float64)
        if name != source:
            if np.any(raw < 0):
                raise ConfigError(f"{what}: column {source!r} has negative token counts")
            raw = np.log2(1.0 + raw)
        cols.append(raw)
    matrix = np.column_stack(cols) if cols else np.empty((len(df), 0))
    return Block("spend", tuple(spend_sources(names)), tuple(names), matrix,
                 dict.fromkeys(spend_sources(names), False))


def categorical_block(df: pd.DataFrame, name: str, sources: Sequence[str]) -> Block:
    """One group from ``sources``: numbers as they are, anything else as dummies.

    Dummies drop the first level in sorted order (the reference); a missing value is a level
    of its own, ``<NA>``.
    """
    cols: list[FloatArray] = []
    names: list[str] = []
    categorical: dict[str, bool] = {}
    for source in sources:
        series = df[source]
        if is_numeric(series):
            cols.append(series.to_numpy(dtype=np.float64))
            names.append(source)
            categorical[source] = False
            continue
        labels = series.astype(object).where(series.notna(), "<NA>").astype(str).to_numpy()
        levels = sorted(set(labels.tolist()))
        categorical[source] = True
        for level in levels[1:]:
            cols.append((labels == level).astype(np.float64))
            names.append(f"{source}={level}")
    matrix = np.column_stack(cols) if cols else np.empty((len(df), 0))
    return Block(name, tuple(sources), tuple(names), matrix, categorical)


def build_design(df: pd.DataFrame, blocks: Sequence[Block]) -> Design:
    """Keep, block by block in order, only the columns that add rank to those kept so far.

    A block left with no column is recorded in :attr:`Design.skipped` with the reason: a
    single level, no variance, or collinear with an earlier group (``mode`` usually is the
    topology itself; it is then merged into ``topology``).
    """
    kept_blocks: list[Block] = []
    skipped: dict[str, str] = {}
    kept: list[FloatArray] = []  # standardised kept columns
    for block in blocks:
        keep_idx: list[int] = []
        for j in range(block.matrix.shape[1]):
            z = _standardise(block.matrix[:, j])
            if z is None:
                continue
            if kept:
                basis = np.column_stack(kept)
                coef, *_ = np.linalg.lstsq(basis, z, rcond=None)
                resid = z - basis @ coef
                if float(resid @ resid) / z.size <= _RANK_TOL:
                    continue
            kept.append(z)
            keep_idx.append(j)
        if keep_idx:
            kept_blocks.append(Block(
                block.name, block.sources, tuple(block.columns[j] for j in keep_idx),
                block.matrix[:, keep_idx], block.categorical,
            ))
        else:
            skipped[block.name] = _why_skipped(df, block, kept_blocks)
    return Design(tuple(kept_blocks), skipped)


def _standardise(x: FloatArray) -> FloatArray | None:
    sd = float(np.std(x))
    if sd == 0.0 or not np.isfinite(sd):
        return None
    return (x - float(np.mean(x))) / sd


def _why_skipped(df: pd.DataFrame, block: Block, earlier: Sequence[Block]) -> str:
    if block.matrix.shape[1] == 0:
        levels = {s: df[s].nunique(dropna=False) for s in block.sources}
        return "single level: " + ", ".join(
            f"{s!r} takes one value ({df[s].iloc[0]!r})" for s, k in levels.items() if k <= 1
        )
    if all(float(np.std(block.matrix[:, j])) == 0.0 for j in range(block.matrix.shape[1])):
        return "no variance"
    for other in earlier:
        for source in other.sources:
            if all(_determines(df, source, s) for s in block.sources):
                return f"collinear with {other.name!r} (determined by {source!r}); merged into it"
    names = ", ".join(repr(b.name) for b in earlier)
    return f"collinear with the earlier groups ({names}); merged into them"


def _determines(df: pd.DataFrame, by: str, target: str) -> bool:
    """Whether each value of ``by`` goes with exactly one value of ``target``."""
    pairs = df[[by, target]].astype(object).fillna("<NA>").astype(str)
    return bool(pairs.groupby(by)[target].nunique().max() <= 1)
