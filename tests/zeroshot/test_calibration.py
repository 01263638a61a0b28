"""Calibration turns similarities into probabilities that are better than rescaled similarities."""

from __future__ import annotations

import numpy as np
import pytest

from echoclip.errors import ConfigError, DataError
from echoclip.metrics import brier_score, minmax_scale
from echoclip.zeroshot.calibration import Calibration, calibrate_prompt_set, fit_calibration
from echoclip.zeroshot.prompts import load_prompt_set, save_prompt_set


def simulated_scores(n: int, seed: int, prevalence: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities as a CLIP model gives them: a narrow band, shifted up a little for positives."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < prevalence
    scores = 0.22 + 0.03 * labels + rng.normal(0.0, 0.012, n)
    return scores, labels.astype(float)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_probabilities_beat_min_max_scaled_similarities(method: str) -> None:
    fit_scores, fit_labels = simulated_scores(60, seed=1)  # "a few labelled studies"
    test_scores, test_labels = simulated_scores(2000, seed=2)
    calibration = fit_calibration(fit_scores, fit_labels, method)
    calibrated = brier_score(test_labels, calibration(test_scores))
    naive = brier_score(test_labels, minmax_scale(test_scores))
    assert calibrated < 0.8 * naive, (calibrated, naive)
    # and no worse than always saying the prevalence
    assert calibrated < brier_score(test_labels, np.full(len(test_labels), test_labels.mean()))


def test_platt_is_increasing_in_the_score_and_folds_back_the_standardisation() -> None:
    scores, labels = simulated_scores(200, seed=3)
    cal = fit_calibration(scores, labels, "platt", score="contrast")
    assert cal.params["coef"] > 0 and cal.score == "contrast" and cal.n == 200
    grid = np.linspace(0.15, 0.3, 20)
    assert np.all(np.diff(cal(grid)) > 0)
    expected = 1 / (1 + np.exp(-(cal.params["coef"] * grid + cal.params["intercept"])))
    np.testing.assert_allclose(cal(grid), expected)


def test_isotonic_is_monotone_and_clipped_outside_the_fitted_range() -> None:
    scores, labels = simulated_scores(200, seed=4)
    cal = fit_calibration(scores, labels, "isotonic")
    grid = np.linspace(scores.min(), scores.max(), 50)
    assert np.all(np.diff(cal(grid)) >= 0)
    assert cal(np.array([-5.0]))[0] == cal(np.array([scores.min()]))[0]
    assert cal(grid).min() >= 0.0 and cal(grid).max() <= 1.0


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_round_trips_through_json_in_the_prompt_set(tmp_path, method: str) -> None:
    scores, labels = simulated_scores(100, seed=5)
    devices = load_prompt_set("devices")
    calibrated = calibrate_prompt_set(devices, {"pacemaker": scores}, {"pacemaker": labels}, method)
    path = save_prompt_set(calibrated, tmp_path / "devices.json")
    again = load_prompt_set(path)
    assert again.targets["tavr"].calibration is None
    original = fit_calibration(scores, labels, method)
    restored = Calibration.from_dict(again.targets["pacemaker"].calibration)
    grid = np.linspace(0.1, 0.35, 30)
    np.testing.assert_allclose(restored(grid), original(grid))


def test_calibration_errors() -> None:
    with pytest.raises(DataError, match="both classes"):
        fit_calibration([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(DataError, match="one label per score"):
        fit_calibration([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ConfigError, match="unknown calibration method 'beta'"):
        fit_calibration([0.1, 0.2], [1, 0], "beta")
    with pytest.raises(ConfigError, match="not a binary target"):
        calibrate_prompt_set("views", {"view": [0.1, 0.2]}, {"view": [0, 1]})
    with pytest.raises(ConfigError, match="isotonic calibration lacks"):
        Calibration.from_dict({"method": "isotonic", "x": [0.1]})


def test_unlabelled_rows_are_ignored() -> None:
    scores, labels = simulated_scores(80, seed=6)
    with_gaps = labels.copy()
    with_gaps[:10] = np.nan
    cal = fit_calibration(scores, with_gaps)
    assert cal.n == 70
