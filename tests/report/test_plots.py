from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from stratagem.attribution import Attribution, Interval
from stratagem.report import (
    figure_accuracy_vs_tokens,
    figure_attribution,
    figure_spend_per_role,
    plot_accuracy_vs_tokens,
    plot_attribution,
    plot_spend_per_role,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.texts]


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG
    assert len(data) > 5_000


@pytest.mark.parametrize(
    "plot", [plot_accuracy_vs_tokens, plot_spend_per_role], ids=["accuracy", "spend"]
)
def test_frame_plots_write_png(
    plot: Callable[[pd.DataFrame, Path], Path], frame: pd.DataFrame, tmp_path: Path
) -> None:
    out = plot(frame, tmp_path / "sub" / "plot.png")
    assert out == tmp_path / "sub" / "plot.png"
    _assert_png(out)


def test_attribution_plot_writes_png(attribution: Attribution, tmp_path: Path) -> None:
    _assert_png(plot_attribution(attribution, tmp_path / "attr.png"))


def test_real_data_is_not_labelled_simulated(frame: pd.DataFrame, attribution: Attribution) -> None:
    for fig in (
        figure_accuracy_vs_tokens(frame),
        figure_spend_per_role(frame),
        figure_attribution(attribution),
    ):
        assert "SIMULATED" not in fig.get_suptitle()
        assert "SIMULATED" not in _texts(fig)


def test_simulated_data_is_titled_and_watermarked(
    sim_frame: pd.DataFrame, sim_attribution: Attribution
) -> None:
    for fig in (
        figure_accuracy_vs_tokens(sim_frame),
        figure_spend_per_role(sim_frame),
        figure_attribution(sim_attribution),
    ):
        assert fig.get_suptitle().endswith("(SIMULATED)")
        assert "SIMULATED" in _texts(fig)


def test_partly_simulated(frame: pd.DataFrame, sim_frame: pd.DataFrame) -> None:
    mixed = pd.concat([frame, sim_frame.head(3)], ignore_index=True)
    assert "(PARTLY SIMULATED)" in figure_accuracy_vs_tokens(mixed).get_suptitle()


def test_accuracy_plot_has_one_line_per_topology_on_log2_axis(frame: pd.DataFrame) -> None:
    ax = figure_accuracy_vs_tokens(frame).axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["single", "debate", "hierarchical"]
    assert len(ax.get_lines()) >= 3


def test_spend_plot_stacks_roles_and_hatches_waste(frame: pd.DataFrame) -> None:
    ax = figure_spend_per_role(frame).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["planner", "solver", "judge"]  # roles that spent anything
    assert "other" in labels  # tokens of roles without a column
    assert labels[-1].startswith("waste")
    assert len(ax.get_xticklabels()) == 6  # 3 topologies x 2 budgets


def test_degenerate_frames_still_plot(
    make_frame: Callable[..., pd.DataFrame], frame: pd.DataFrame, tmp_path: Path
) -> None:
    one = make_frame(topologies=("single",), budgets=(2000,), seeds=1, tasks=1)
    empty = frame.iloc[0:0]
    unscored = frame.assign(correct=None)
    zero = one.assign(
        tokens_total=0, tokens_solver=0, tokens_judge=0, tokens_planner=0, waste_tokens=0
    )
    for i, df in enumerate((one, empty, unscored, zero)):
        _assert_png(plot_accuracy_vs_tokens(df, tmp_path / f"acc{i}.png"))
        _assert_png(plot_spend_per_role(df, tmp_path / f"spend{i}.png"))
    for fig in (figure_spend_per_role(empty), figure_accuracy_vs_tokens(empty)):
        assert [t.get_text() for t in fig.axes[0].texts] == ["No runs to plot."]
    acc = figure_accuracy_vs_tokens(unscored)
    assert [t.get_text() for t in acc.axes[0].texts] == ["No scored runs to plot."]
    assert figure_accuracy_vs_tokens(zero).axes[0].get_xscale() == "linear"


def test_attribution_without_groups(tmp_path: Path) -> None:
    attr = Attribution(r2=Interval(0.0, 0.0, 0.0), shares={}, r2_parts={}, n=3, n_boot=0, groups={})
    _assert_png(plot_attribution(attr, tmp_path / "a.png"))


def test_plots_from_threads(frame: pd.DataFrame, attribution: Attribution, tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        jobs = [
            pool.submit(plot_accuracy_vs_tokens, frame, tmp_path / "a.png"),
            pool.submit(plot_spend_per_role, frame, tmp_path / "s.png"),
            pool.submit(plot_attribution, attribution, tmp_path / "t.png"),
            pool.submit(plot_accuracy_vs_tokens, frame, tmp_path / "a2.png"),
        ]
        for job in jobs:
            _assert_png(job.result())


def test_plotting_leaves_pyplot_and_the_backend_alone(tmp_path: Path) -> None:
    code = (
        "import sys, matplotlib, pandas as pd\n"
        "before = matplotlib.rcParams._get_backend_or_none()\n"
        "from stratagem.report import plot_spend_per_role\n"
        "df = pd.DataFrame({'topology': ['a'], 'budget': [1], 'tokens_total': [5],"
        " 'tokens_solver': [5], 'waste_tokens': [1]})\n"
        f"plot_spend_per_role(df, {str(tmp_path / 'p.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams._get_backend_or_none() == before\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_plot_labels_are_redacted(frame: pd.DataFrame, secret: str) -> None:
    df = frame.assign(topology=frame["topology"].where(frame["topology"] != "single", secret))
    for fig in (figure_accuracy_vs_tokens(df), figure_spend_per_role(df)):
        fig.canvas.draw()
        texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
        assert not any(secret in t for t in texts)
        assert any("[REDACTED]" in t for t in texts)


@pytest.mark.parametrize("budgets", [(600, 1200), (600,)])
@pytest.mark.parametrize("topologies", [
    ("single", "best_of_4+verifier", "best_of_8+verifier", "best_of_4+vote"),
    tuple(f"best_of_{n}+verifier_with_a_long_label" for n in (2, 4, 8, 16, 32, 64)),
])
def test_spend_per_role_topology_labels_do_not_overlap(
        make_frame: Callable[..., pd.DataFrame], topologies: tuple[str, ...],
        budgets: tuple[int, ...]) -> None:
    fig = figure_spend_per_role(make_frame(topologies=topologies, budgets=budgets))
    fig.canvas.draw()
    axes = fig.axes[0]
    axis = axes.child_axes[0] if len(budgets) > 1 else axes  # the topology names
    texts = [t for t in (axis.get_xticklabels() if len(budgets) > 1
                         else axes.get_xticklabels()) if t.get_text()]
    assert [t.get_text().replace("\n", "") for t in texts] == list(topologies)
    boxes = [t.get_window_extent() for t in texts]
    tilt = texts[0].get_rotation()
    for left, right in itertools.pairwise(boxes):
        if tilt == 0:  # side by side (wrapped): their boxes are apart
            assert not left.overlaps(right), (left, right)
        else:  # tilted, anchored at their right ends: parallel lines, a line height apart
            assert all("\n" not in t.get_text().strip("\n") for t in texts)
            line = texts[0].get_fontsize() * fig.dpi / 72
            assert (right.x1 - left.x1) * math.sin(math.radians(tilt)) > 1.2 * line
