"""Plots are written atomically as PNGs, with axes a reader can interpret (units included)."""

from __future__ import annotations

import numpy as np
import pytest

from echoclip import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(fig) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_regression_figure_has_scatter_and_bland_altman_with_units(tmp_path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(20, 75, 50)
    pred = truth + rng.normal(2, 5, 50)
    fig = plots.regression_figure(truth, pred)
    (sx, sy), (bx, by) = _labels(fig)
    assert sx == "true LV ejection fraction (%)" and sy == "predicted LV ejection fraction (%)"
    assert "(%)" in bx and by == "predicted − true (%)"
    assert "MAE" in fig.axes[0].get_title()
    bias = np.mean(pred - truth)
    lines = [ln.get_ydata()[0] for ln in fig.axes[1].get_lines() if len(ln.get_ydata())]
    assert any(abs(y - bias) < 1e-9 for y in lines)  # the bias line is drawn at the mean difference
    path = plots.plot_regression(truth, pred, tmp_path / "ef.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and not list(tmp_path.glob("*.tmp"))


def test_roc_figure_has_one_curve_per_target(tmp_path) -> None:
    rng = np.random.default_rng(1)
    curves = {}
    for name in ("pacemaker", "tavr"):
        truth = rng.random(80) < 0.3
        curves[name] = (truth, truth + rng.normal(0, 0.6, 80))
    curves["impella"] = (np.zeros(80), rng.random(80))  # no positive case
    fig = plots.roc_figure(curves)
    assert _labels(fig) == [("false positive rate (1 − specificity)", "true positive rate (sensitivity)")]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("pacemaker: AUC") for t in legend) and any(
        t.startswith("tavr: AUC") for t in legend
    )
    assert any(t.startswith("impella: one class only") for t in legend)
    assert plots.plot_roc_curves(curves, tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC


def test_rank_histogram(tmp_path) -> None:
    ranks = np.array([1, 1, 2, 5, 9, 30])
    fig = plots.rank_histogram_figure(ranks, n_candidates=40)
    ((x, y),) = _labels(fig)
    assert "rank of the true report" in x and "of 40" in x and y == "number of studies"
    counts = sum(p.get_height() for p in fig.axes[0].patches)
    assert counts == len(ranks)
    assert plots.plot_rank_histogram(ranks, tmp_path / "r.png", n_candidates=40).read_bytes()[:8] == PNG_MAGIC


def test_loss_curves_from_a_metrics_csv(tmp_path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,train_loss,lr,val_loss\n1,4.1,0.001,\n2,3.5,0.001,\n3,3.0,0.001,3.2\n")
    fig = plots.loss_curves_figure(csv)
    assert _labels(fig)[0][0] == "training step (optimizer updates)"
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["train_loss", "val_loss"]
    assert list(fig.axes[0].get_lines()[1].get_xdata()) == [3]
    assert plots.plot_loss_curves(csv, tmp_path / "loss.png").read_bytes()[:8] == PNG_MAGIC
    bad = tmp_path / "bad.csv"
    bad.write_text("step,lr\n1,0.1\n")
    with pytest.raises(ValueError, match="no loss column"):
        plots.loss_curves_figure(bad)
