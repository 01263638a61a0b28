"""Each scoring method gives the answer worked out by hand on embeddings chosen by the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echoclip.errors import ConfigError
from echoclip.zeroshot import scoring
from echoclip.zeroshot.calibration import Calibration
from echoclip.zeroshot.prompts import load_prompt_set

from .toy import axis, ef_prompts, ef_vector


def ef_prompt_embeddings(values: np.ndarray, templates: int = 2) -> np.ndarray:
    """``[V, P, D]``: every template of a value embeds like the value (the toy text tower ignores wording)."""
    return np.stack([[ef_vector(v)] * templates for v in values])


def test_a_video_equal_to_the_40_percent_prompt_reads_40() -> None:
    values = load_prompt_set(ef_prompts()).targets["ef"].values()
    prompts = ef_prompt_embeddings(values)
    video = ef_vector(40.0)[None]
    assert scoring.argmax(video, prompts, values)[0] == 40.0
    # top 20 % of 52 candidates = 10: 40, 36, 44, 32, 48 twice each; the median is 40
    assert scoring.echoclip_rank(video, prompts, values)[0] == 40.0
    assert scoring.expectation(video, prompts, values, logit_scale=100.0)[0] == pytest.approx(40.0, abs=1e-3)


def test_every_value_of_the_grid_is_read_back_by_argmax_and_rank() -> None:
    values = load_prompt_set(ef_prompts()).targets["ef"].values()
    prompts = ef_prompt_embeddings(values)
    inner = values[(values >= 8) & (values <= 92)]  # the rank method needs neighbours on both sides
    videos = np.stack([ef_vector(v) for v in inner])
    np.testing.assert_array_equal(scoring.argmax(videos, prompts, values), inner)
    np.testing.assert_array_equal(scoring.echoclip_rank(videos, prompts, values), inner)


def test_shipped_ef_set_reads_40_within_one_unit() -> None:
    """With 81 values x 3 templates the top 20 % holds an even count: the lower middle (published) is 39 or 40."""
    target = load_prompt_set("ejection_fraction").targets["ejection_fraction"]
    values = target.values()
    prompts = ef_prompt_embeddings(values, templates=len(target.templates))
    video = ef_vector(40.0)[None]
    assert scoring.argmax(video, prompts, values)[0] == 40.0
    assert scoring.echoclip_rank(video, prompts, values)[0] in (39.0, 40.0)


def test_echoclip_rank_on_a_toy_example_computed_by_hand() -> None:
    """Ten candidates (values 0, 10, ..., 90) with one-hot embeddings, so a clip's similarities are its entries.

    Clip A ranks the candidates 30, 40, 90, 80, 70, 60, 50, 20, 10, 0.
    Clip B ranks them       50, 60, 0, 10, 20, 30, 40, 70, 80, 90.
    Values averaged per rank position: 40, 50, 45, 45, 45, 45, 45, 45, 45, 45.
    Top 20 % = the first 2 positions, [40, 50]; the published median of an even count is the
    lower middle value: 40 (the mean of the two would be 45). Clip A alone: [30, 40] -> 30.
    """
    values = np.arange(0, 100, 10, dtype=float)
    prompts = np.eye(10)
    clip_a = np.array([0.0, 0.1, 0.2, 0.9, 0.8, 0.3, 0.4, 0.5, 0.6, 0.7])
    clip_b = np.array([0.7, 0.6, 0.5, 0.4, 0.3, 0.95, 0.85, 0.2, 0.1, 0.0])
    study = np.stack([clip_a, clip_b])[None]  # [N=1, K=2, D=10]
    assert scoring.echoclip_rank(study, prompts, values)[0] == 40.0
    assert scoring.echoclip_rank(clip_a[None], prompts, values)[0] == 30.0
    # a larger top fraction: the first 4 positions [40, 50, 45, 45] -> sorted [40, 45, 45, 50] -> 45
    assert scoring.echoclip_rank(study, prompts, values, top_fraction=0.4)[0] == 45.0


def _published_regression(video: torch.Tensor, prompts: torch.Tensor, values: list[float]) -> torch.Tensor:
    """The published EchoCLIP procedure, step by step, in torch (video ``[N, frames, D]``)."""
    per_frame = video @ prompts.T
    ranked = torch.argsort(per_frame, dim=-1, descending=True)
    ranked_values = torch.tensor(values)[ranked]
    averaged = ranked_values.float().mean(dim=1)
    top = int(averaged.shape[1] * 0.2)
    return averaged[:, :top].median(dim=-1)[0]


def test_echoclip_rank_matches_the_published_procedure_on_random_embeddings() -> None:
    rng = np.random.default_rng(0)
    values = [float(v) for v in range(0, 101)] * 2  # two templates, template-major as published
    prompts = rng.normal(size=(len(values), 16))
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    video = rng.normal(size=(5, 4, 16))
    video /= np.linalg.norm(video, axis=2, keepdims=True)
    ours = scoring.echoclip_rank(video, prompts, values)
    published = _published_regression(torch.from_numpy(video), torch.from_numpy(prompts), values)
    np.testing.assert_allclose(ours, published.numpy(), atol=1e-5)


def test_expectation_by_hand() -> None:
    """Values 0, 50, 100 with similarities 0.2, 0.5, 0.3 at scale 10: weights e^2, e^5, e^3."""
    values = np.array([0.0, 50.0, 100.0])
    prompts = np.eye(3)
    video = np.array([[0.2, 0.5, 0.3]])
    w = np.exp([2.0, 5.0, 3.0])
    expected = (w @ values) / w.sum()
    assert scoring.expectation(video, prompts, values, logit_scale=10.0)[0] == pytest.approx(expected)
    # a cold softmax approaches argmax, a hot one the mean of the candidates
    assert scoring.expectation(video, prompts, values, logit_scale=1000.0)[0] == pytest.approx(50.0)
    assert scoring.expectation(video, prompts, values, logit_scale=1e-6)[0] == pytest.approx(50.0, abs=1e-3)


def test_expectation_and_argmax_average_templates_and_clips() -> None:
    """Two templates per value and two clips: similarities are averaged per value before choosing."""
    values = np.array([10.0, 20.0])
    # value 10: templates on axes 0 and 1; value 20: templates on axes 2 and 3
    prompts = np.stack([[axis(0), axis(1)], [axis(2), axis(3)]])
    # clip 1 prefers a template of 10 strongly, clip 2 both templates of 20 mildly
    study = np.stack([0.9 * axis(0) + 0.2 * axis(2), 0.5 * axis(2) + 0.5 * axis(3)])[None]
    # mean similarity: value 10 = (0.9 + 0 + 0 + 0) / 4 = 0.225; value 20 = (0.2 + 0 + 0.5 + 0.5) / 4 = 0.3
    assert scoring.argmax(study, prompts, values)[0] == 20.0
    w = np.exp([100 * 0.225, 100 * 0.3])
    assert scoring.expectation(study, prompts, values)[0] == pytest.approx((w @ values) / w.sum())


def test_binary_similarity_and_contrast_by_hand() -> None:
    positive = np.stack([axis(0), axis(1)])
    negative = np.stack([axis(2)])
    video = np.stack([0.6 * axis(0) + 0.8 * axis(2), axis(1)])
    # similarity: mean over the positive prompts: (0.6 + 0) / 2 and (0 + 1) / 2
    np.testing.assert_allclose(scoring.similarity(video, positive), [0.3, 0.5])
    # contrast: minus the mean over the negative prompts (0.8 and 0)
    np.testing.assert_allclose(scoring.contrast(video, positive, negative), [0.3 - 0.8, 0.5])
    # several clips of one study are averaged
    study = np.stack([video[0], video[1]])[None]
    np.testing.assert_allclose(scoring.similarity(study, positive), [0.4])


def test_contrast_without_negative_prompts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="negative prompts"):
        scoring.contrast(axis(0)[None], axis(0)[None], None)


def test_calibrated_maps_the_raw_score_through_the_calibration() -> None:
    positive = np.stack([axis(0)])
    negative = np.stack([axis(1)])
    video = np.stack([0.8 * axis(0) + 0.6 * axis(1)])
    cal = Calibration.from_dict({"method": "platt", "score": "contrast", "coef": 5.0, "intercept": -1.0})
    expected = 1 / (1 + math.exp(-(5.0 * (0.8 - 0.6) - 1.0)))
    assert scoring.calibrated(video, positive, negative, calibration=cal)[0] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="needs a calibration"):
        scoring.calibrated(video, positive, negative)


def test_class_probabilities_sum_to_one_and_pick_the_nearest_class() -> None:
    classes = [np.stack([axis(0)]), np.stack([axis(1), axis(2)]), np.stack([axis(3)])]
    video = np.stack([axis(2), axis(3)])
    probs = scoring.class_probabilities(video, classes, logit_scale=10.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert list(probs.argmax(axis=1)) == [1, 2]
    # by hand for the first video: mean similarities 0, 0.5, 0 at scale 10
    w = np.exp([0.0, 5.0, 0.0])
    np.testing.assert_allclose(probs[0], w / w.sum())


def test_registry_knows_every_method_and_rejects_unknown_ones() -> None:
    assert set(scoring.SCORERS["regression"]) >= {"echoclip_rank", "expectation", "argmax"}
    assert set(scoring.SCORERS["binary"]) >= {"similarity", "contrast", "calibrated"}
    assert scoring.kinds_of_method("argmax") == ["regression", "categorical"]
    assert scoring.get_scorer("regression", "echoclip_rank") is scoring.echoclip_rank
    with pytest.raises(ConfigError, match="unknown method 'median'"):
        scoring.get_scorer("regression", "median")
    with pytest.raises(ConfigError, match="unknown target kind"):
        scoring.register_scorer("ordinal", "x")


def test_a_user_method_can_be_registered() -> None:
    @scoring.register_scorer("regression", "first_value")
    def first_value(video_emb, prompt_emb, values, *, logit_scale=None):
        return np.full(len(video_emb), float(np.asarray(values)[0]))

    try:
        assert scoring.get_scorer("regression", "first_value") is first_value
    finally:
        del scoring.SCORERS["regression"]["first_value"]
