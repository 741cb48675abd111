"""The Python API of an ablation: :func:`ablate`, :func:`aablate` and :func:`load`.

``stratagem ablate CONFIG`` and ``stratagem.ablate(CONFIG)`` are the same path: both resolve
the config with :func:`resolve_config`, show progress with :func:`progress_bar` and call
:func:`~stratagem.ablation.run_ablation`, so the output folder rules (a rerun resumes, a
folder holding runs made with other settings is refused) are the CLI's, by construction.

:func:`ablate` works where an event loop is already running (a Jupyter cell): it then runs
the ablation on a loop of its own in a worker thread and waits for it.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stratagem.ablation._config import AblationConfig, load_config, parse_config
from stratagem.ablation._executors import Executor, executor_for
from stratagem.ablation._report import AblationReport, report_ablation
from stratagem.ablation._results import ResultsStore
from stratagem.ablation._runner import AblationOutcome, run_ablation
from stratagem.attribution import Attribution, attribute
from stratagem.budgets import LedgerStore, TokenLedger
from stratagem.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Ablation", "aablate", "ablate", "load", "progress_bar", "resolve_config"]

ConfigSource = AblationConfig | str | Path
"""What :func:`ablate` accepts: a validated config, a path to a TOML file, or TOML text."""


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_config(config: ConfigSource,
                   overrides: Mapping[str, Any] | None = None) -> tuple[AblationConfig, str | None]:
    """The validated config and the text to copy into the output folder.

    Args:
        config: An :class:`AblationConfig`, a path to a TOML file, or TOML text (a string
            with a newline or an ``=`` that names no file).
        overrides: Top-level fields to replace (``output="elsewhere"``); a mapping merges
            into its section (``run={"concurrency": 8}``).

    Returns:
        The config and its TOML text (``None`` for an :class:`AblationConfig`, which has no
        text; the output folder then has no ``config.toml``).

    Raises:
        ConfigError: For a missing file, invalid TOML or an invalid field (overrides
            included; the message names the field).
    """
    text: str | None
    if isinstance(config, AblationConfig):
        cfg, text = config, None
    elif isinstance(config, Path) or not ("\n" in config or "=" in config) or \
            Path(config).is_file():
        path = Path(config)
        cfg = load_config(path)
        text = path.read_text(encoding="utf-8")
    else:
        try:
            data = tomllib.loads(config)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the config text is not valid TOML: {exc}") from exc
        cfg, text = parse_config(data, source="config text"), config
    if overrides:
        unknown = sorted(set(overrides) - set(AblationConfig.model_fields))
        if unknown:
            raise ConfigError(f"unknown override(s) {', '.join(unknown)}: use fields of the "
                              f"config ({', '.join(AblationConfig.model_fields)})")
        merged = _merge(cfg.model_dump(exclude_unset=True), overrides)
        cfg = parse_config(merged, source="overrides")
    return cfg, text


@contextmanager
def progress_bar(name: str, *, console: Console | None = None,
                 disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (a terminal line, or a live cell output in Jupyter) for one
    ablation; yields the ``on_progress`` callback of :func:`run_ablation`."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, disable=disable) as bar:
        task = bar.add_task(name, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


@dataclass
class Ablation:
    """An ablation's output folder, opened for analysis.

    Attributes:
        output: The output folder.
        outcome: What the call that ran it did (``None`` for :func:`load`).
    """

    output: Path
    outcome: AblationOutcome | None = None
    _ledger: TokenLedger | None = field(default=None, repr=False)

    @property
    def results(self) -> pd.DataFrame:
        """One row per finished run, one column per :class:`RunRecord` field."""
        with ResultsStore(self.output / "results.sqlite") as store:
            return store.to_pandas()

    @property
    def ledger(self) -> TokenLedger:
        """Every call and transfer of the ablation (read once, then kept in memory)."""
        if self._ledger is None:
            with LedgerStore(self.output / "ledger.sqlite") as store:
                self._ledger = TokenLedger(store)
        return self._ledger

    def attribution(self, *, n_boot: int = 1000) -> Attribution:
        """Variance shares of success by variable group (:func:`stratagem.attribution.attribute`).

        Raises:
            ConfigError: If the results cannot support an attribution (say, one topology).
        """
        return attribute(self.results, n_boot=n_boot)

    def report(self, *, title: str | None = None, n_boot: int = 1000) -> AblationReport:
        """Write the HTML report and plots to ``report/`` in the folder, as the CLI does."""
        return report_ablation(self.output, title=title, n_boot=n_boot)


def load(folder: str | Path) -> Ablation:
    """Open an output folder that ``stratagem ablate`` (or :func:`ablate`) wrote.

    Raises:
        ConfigError: If the folder has no results and ledger files.
        LedgerFormatError: If a file was written by a newer stratagem.
    """
    out = Path(folder)
    if not (out / "results.sqlite").is_file() or not (out / "ledger.sqlite").is_file():
        raise ConfigError(f"{out} is not an ablation output folder (no results.sqlite and "
                          "ledger.sqlite): pass the folder `stratagem ablate` wrote")
    ResultsStore(out / "results.sqlite").close()  # refuses a newer or foreign file now
    LedgerStore(out / "ledger.sqlite").close()
    return Ablation(out)


async def aablate(config: ConfigSource, *, executor: str | Executor = "local",
                  address: str | None = None, progress: bool = True,
                  console: Console | None = None, **overrides: Any) -> Ablation:
    """Run (or resume) an ablation on the running event loop; see :func:`ablate`."""
    cfg, text = resolve_config(config, overrides)
    runner = executor if not isinstance(executor, str) else executor_for(executor,
                                                                         address=address)
    with progress_bar(cfg.name, console=console, disable=not progress) as on_progress:
        outcome = await run_ablation(cfg, config_text=text, on_progress=on_progress,
                                     executor=runner)
    return Ablation(outcome.output, outcome)


def ablate(config: ConfigSource, *, executor: str | Executor = "local",
           address: str | None = None, progress: bool = True, console: Console | None = None,
           **overrides: Any) -> Ablation:
    """Run (or resume) an ablation, exactly as ``stratagem ablate`` does.

    Rerunning the same config resumes it: finished runs are skipped. Inside a running event
    loop (a notebook) the ablation runs on its own loop in a worker thread.

    Args:
        config: An :class:`AblationConfig`, a path to a TOML file, or TOML text.
        executor: ``local``, ``ray``, or an :class:`Executor`.
        address: With ``executor="ray"``: the cluster to join.
        progress: Show a progress bar (terminal or notebook).
        console: Where the bar goes (rich picks the terminal or the notebook by default).
        **overrides: Config fields to replace (``output=...``; a mapping merges into its
            section, e.g. ``run={"concurrency": 8}``).

    Returns:
        The output folder, opened; ``outcome.interrupted`` tells whether it stopped early.

    Raises:
        ConfigError: For a config that cannot run, or a folder with runs made with other
            settings (the message names what changed).

    Example:
        >>> ab = stratagem.ablate("examples/simulated_sweep.toml")  # doctest: +SKIP
        >>> ab.results.groupby("topology").correct.mean()  # doctest: +SKIP
    """
    coro = aablate(config, executor=executor, address=address, progress=progress,
                   console=console, **overrides)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop runs in this thread (Jupyter): it cannot be re-entered, so use another thread.
    with ThreadPoolExecutor(1, thread_name_prefix="stratagem-ablate") as pool:
        return pool.submit(asyncio.run, coro).result()
