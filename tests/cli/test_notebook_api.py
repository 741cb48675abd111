"""``stratagem.ablate`` from a notebook: a loop is already running, and the results are the
CLI's on the same config; resuming, the settings check and the data frames."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import stratagem
from stratagem.ablation import AblationConfig, load_config
from stratagem.budgets import LedgerStore, TokenLedger
from stratagem.errors import ConfigError

from .conftest import SIM_CONFIG, Result

# What a run did; wall and finish times differ between two executions of the same run.
VARYING = ["wall_s", "finished_at"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=VARYING).sort_values("run_id").reset_index(drop=True)


def test_ablate_inside_a_running_loop_matches_the_cli(
        tmp_path: Path, cli: Callable[..., Result],
        sim_config_file: Callable[[Path, Path], Path]) -> None:
    config = sim_config_file(tmp_path / "sim.toml", tmp_path / "by-cli")
    assert cli("-q", "ablate", config, "--no-report").code == 0
    by_cli = stratagem.load(tmp_path / "by-cli")

    async def notebook_cell() -> stratagem.Ablation:
        asyncio.get_running_loop()  # what Jupyter has while a cell runs
        return stratagem.ablate(config, output=tmp_path / "by-api", progress=False)

    ab = asyncio.run(notebook_cell())
    assert ab.outcome is not None and ab.outcome.ran == 18 and not ab.outcome.interrupted
    pd.testing.assert_frame_equal(_sorted(ab.results), _sorted(by_cli.results))
    assert (tmp_path / "by-api" / "config.toml").read_text() == config.read_text()
    assert ab.ledger.totals().total_tokens == by_cli.ledger.totals().total_tokens


def test_aablate_takes_toml_text_and_a_rerun_resumes(tmp_path: Path) -> None:
    text = SIM_CONFIG.format(output=(tmp_path / "out").as_posix())
    first = asyncio.run(stratagem.aablate(text, progress=False))
    assert first.outcome is not None and first.outcome.ran == 18
    again = stratagem.ablate(text, progress=False)
    assert again.outcome is not None
    assert (again.outcome.ran, again.outcome.skipped) == (0, 18)


def test_a_folder_with_other_settings_is_refused_as_by_the_cli(tmp_path: Path) -> None:
    text = SIM_CONFIG.format(output=(tmp_path / "out").as_posix())
    stratagem.ablate(text, progress=False)
    with pytest.raises(ConfigError, match=r"other settings \(run\.temperature was 0\.8"):
        stratagem.ablate(text, progress=False, run={"temperature": 0.3})


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    cfg = load_config_text(SIM_CONFIG.format(output=tmp_path.as_posix()))
    with pytest.raises(ConfigError, match=r"overrides: run\.concurrency"):
        stratagem.ablate(cfg, run={"concurrency": 0})
    with pytest.raises(ConfigError, match="unknown override"):
        stratagem.ablate(cfg, outptu="x")


def load_config_text(text: str) -> AblationConfig:
    import tomllib

    from stratagem.ablation import parse_config

    return parse_config(tomllib.loads(text))


def test_load_refuses_a_folder_that_is_not_an_output_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an ablation output folder"):
        stratagem.load(tmp_path)


def test_frames_have_one_row_per_run_and_per_call(sim_output: Path) -> None:
    ab = stratagem.load(sim_output)
    results = ab.results
    assert len(results) == 18 and results.run_id.is_unique
    calls = ab.ledger.to_pandas()
    with LedgerStore(sim_output / "ledger.sqlite") as store:
        ledger = TokenLedger(store)
    assert len(calls) == len(ledger)
    assert calls.total_tokens.sum() == ledger.totals().total_tokens
    assert "label:topology" in calls.columns
    per_run = calls.groupby("run_id").total_tokens.sum()
    assert (results.set_index("run_id").tokens_total == per_run[results.run_id].values).all()
    assert str(calls.cached_tokens.dtype) == "Int64"
    assert ab.ledger.to_pandas(role="judge").role.eq("judge").all()
    assert TokenLedger().to_pandas().empty


def test_attribution_and_report_of_a_loaded_folder(tmp_path: Path,
                                                    sim_config_file: Callable[..., Path]) -> None:
    config = load_config(sim_config_file(tmp_path / "sim.toml", tmp_path / "out"))
    ab = stratagem.ablate(config, progress=False)
    assert not (tmp_path / "out" / "config.toml").exists()  # a config object has no text
    report = ab.report(n_boot=50)
    assert report.html.is_file()
    try:
        shares = ab.attribution(n_boot=50)
    except ConfigError:
        return  # 18 runs may not support one; the report said why
    assert shares is not None
