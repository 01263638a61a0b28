"""Metrics give the values computed by hand, skip missing rows, and say nan when undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoclip.metrics import (
    binary_metrics,
    brier_score,
    categorical_metrics,
    minmax_scale,
    regression_metrics,
    youden_threshold,
)


def test_regression_metrics_by_hand() -> None:
    truth = [50.0, 60.0, 30.0, 40.0]
    pred = [52.0, 57.0, 30.0, 44.0]  # errors +2, -3, 0, +4
    m = regression_metrics(truth, pred)
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(9 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((4 + 9 + 0 + 16) / 4))
    # R² = 1 - SSE / SST, SST around the mean 45: 25 + 225 + 225 + 25
    assert m["r2"] == pytest.approx(1 - 29 / 500)
    assert m["pearson_r"] == pytest.approx(np.corrcoef(truth, pred)[0, 1])


def test_regression_metrics_drop_missing_rows() -> None:
    m = regression_metrics([50.0, np.nan, 30.0, 40.0], [52.0, 10.0, np.nan, 44.0])
    assert m["n"] == 2 and m["mae"] == pytest.approx(3.0)
    assert math.isnan(m["pearson_r"])  # two points: no correlation to speak of
    empty = regression_metrics([np.nan], [1.0])
    assert empty["n"] == 0 and math.isnan(empty["mae"])


def test_binary_metrics_by_hand() -> None:
    truth = [1, 1, 1, 0, 0, 0, 0, 0]
    score = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.05, 0.4]
    m = binary_metrics(truth, score, threshold=0.5)
    # at 0.5: TP 2, FN 1, FP 1, TN 4
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # AUC: of the 15 positive-negative pairs, 0.3 loses to 0.7 and 0.4: 13 / 15
    assert m["auc"] == pytest.approx(13 / 15)
    assert m["brier"] == pytest.approx(np.mean((np.array(score) - np.array(truth)) ** 2))
    assert m["n"] == 8 and m["n_positive"] == 3


def test_binary_metrics_without_a_second_class_or_probabilities() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["auc"]) and math.isnan(m["sensitivity"]) and m["specificity"] == 1.0
    raw = binary_metrics([0, 1], [-0.2, 1.7], threshold=0.0)
    assert "brier" not in raw and raw["auc"] == 1.0


def test_brier_minmax_and_youden() -> None:
    assert brier_score([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    with pytest.raises(ValueError, match="probabilities"):
        brier_score([1, 0], [1.5, 0.2])
    np.testing.assert_allclose(minmax_scale([0.2, 0.3, 0.25]), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(minmax_scale([0.2, 0.2]), [0.5, 0.5])
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.7]) == pytest.approx(0.6)
    assert math.isnan(youden_threshold([1, 1], [0.1, 0.2]))


def test_categorical_metrics() -> None:
    truth = ["A4C", "A4C", "PLAX", "PSAX", None]
    pred = ["A4C", "PLAX", "PLAX", "PSAX", "A4C"]
    m = categorical_metrics(truth, pred)
    assert m["n"] == 4 and m["accuracy"] == pytest.approx(3 / 4)
    # recall per class: A4C 1/2, PLAX 1, PSAX 1
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
