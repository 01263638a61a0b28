"""The OOD reference: its score and threshold by hand, the layer statistics of the embedding
pass, saved with the model and loaded back, ignored when stale or absent, and a real echo
cine scoring far above simulated ones."""

from __future__ import annotations

import importlib.metadata
import logging
import math

import numpy as np
import pytest
import torch

from echoclip.errors import DataError, ModelError
from echoclip.models.factory import create_model, load_model
from echoclip.models.ood import (
    OOD_FILE,
    OODReference,
    fit_ood,
    fit_reference,
    load_ood,
    save_ood,
    score_ood,
    weights_fingerprint,
)


def test_the_score_is_the_mahalanobis_distance_to_the_training_statistics():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 3)) * np.array([1.0, 2.0, 0.5])
    reference = fit_reference(train)
    mean = train.mean(axis=0)
    cov = np.cov(train.T, bias=True)
    cov += 0.1 * np.trace(cov) / 3 * np.eye(3)  # the shrinkage
    query = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [np.nan] * 3])
    expected = [math.sqrt((q - mean) @ np.linalg.inv(cov) @ (q - mean)) for q in query[:2]]
    scores = reference.score(query)
    np.testing.assert_allclose(scores[:2], expected, rtol=1e-4)
    assert math.isnan(scores[2])
    assert reference.flag(query) is None  # not calibrated: no threshold, no flags
    assert reference.calibration["train_videos"] == 400 and reference.calibration["dim"] == 3


def test_calibration_flags_at_most_the_quantile_of_held_out_videos_and_records_it():
    rng = np.random.default_rng(0)
    reference = fit_reference(rng.normal(size=(300, 16)))
    held_out = rng.normal(size=(200, 16))
    calibrated = reference.calibrate(held_out, quantile=0.025)
    c = calibrated.calibration
    assert c["quantile"] == 0.025 and c["held_out_videos"] == 200 and c["held_out_above"] == 5
    assert c["threshold"] == calibrated.threshold
    assert calibrated.flag(held_out).sum() == 5
    unlike = 4.0 + rng.normal(size=(20, 16))  # far from the training cloud
    assert calibrated.flag(unlike).all()
    assert reference.threshold is None  # calibrate returns a new reference


def test_layer_statistics_come_from_the_same_pass_that_embeds(tokenizer):
    from echoclip.models.embed import encode_videos
    from echoclip.models.ood import layer_statistics

    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=tokenizer).eval()
    clips = torch.randn(3, *model.video_shape)
    out = encode_videos(model, clips, ood_features=True, progress=False, batch_size=2)
    convs = [m for m in model.video_tower.modules() if isinstance(m, torch.nn.Conv2d)]
    assert out.ood_features.shape == (3, 2 * sum(c.out_channels for c in convs))
    with torch.no_grad(), layer_statistics(model) as take:
        model.encode_video(clips[1:2])
        np.testing.assert_allclose(take(1).numpy(), out.ood_features[1:2], rtol=1e-4, atol=1e-5)
    assert encode_videos(model, clips, progress=False).ood_features is None  # no reference, not asked


def test_saved_with_the_model_and_loaded_back(tmp_path, tokenizer):
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(50, 8))
    reference = fit_reference(stats, fingerprint=weights_fingerprint(model)).calibrate(stats[:20])
    model.ood_reference = reference
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / OOD_FILE).is_file()
    loaded = load_model(tmp_path / "m").ood_reference
    assert loaded is not None and loaded.threshold == pytest.approx(reference.threshold)
    assert loaded.calibration == reference.calibration
    assert torch.equal(loaded.mean, reference.mean) and torch.equal(loaded.precision, reference.precision)
    np.testing.assert_allclose(loaded.score(stats), reference.score(stats))


def test_a_model_directory_without_the_file_has_no_reference(tmp_path, tokenizer):
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.ood_reference is None and load_ood(tmp_path / "m") is None
    scores, flags = score_ood(loaded, np.ones((3, 8)))
    assert np.isnan(scores).all() and flags is None
    scores, flags = score_ood(loaded, None, rows=2)
    assert scores.shape == (2,) and np.isnan(scores).all() and flags is None


def test_a_reference_of_other_weights_is_never_used(tmp_path, tokenizer, caplog):
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    stats = np.random.default_rng(0).normal(size=(10, 4))
    model.ood_reference = fit_reference(stats, fingerprint=weights_fingerprint(model)).calibrate(stats)
    model.save_pretrained(tmp_path / "m")
    stale = model.ood_reference
    with torch.no_grad():
        model.logit_scale.add_(1.0)  # a training step, as far as the fingerprint can tell
    with caplog.at_level(logging.WARNING):
        model.save_pretrained(tmp_path / "trained")  # not saved with weights it does not describe
        assert not (tmp_path / "trained" / OOD_FILE).exists()
        save_ood(stale, tmp_path / "trained")  # written by hand all the same: ignored on loading
        assert load_model(tmp_path / "trained").ood_reference is None
    assert any("fitted on other weights" in r.getMessage() for r in caplog.records)
    assert load_model(tmp_path / "m").ood_reference is not None


def test_a_broken_file_is_an_error_naming_it(tmp_path, tokenizer):
    create_model("echoclip-tiny", tokenizer=tokenizer).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / OOD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=f"{OOD_FILE}: cannot read the OOD reference"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelError, match="not a model directory"):
        save_ood(fit_reference(np.eye(4)), tmp_path / "elsewhere")
    with pytest.raises(DataError, match="mean"):
        OODReference(torch.zeros(4), torch.eye(3))


def _has_pydicom_data() -> bool:
    try:
        importlib.metadata.version("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has_pydicom_data(), reason="pydicom-data (a dev dependency) holds the real cine")
def test_a_real_apical_cine_scores_below_simulated_held_out_videos(tmp_path, tokenizer):
    """The demo's case: a model of simulated echoes, asked about a real one."""
    from pydicom.data import get_testdata_file

    from echoclip.data.datasets import open_dataset
    from echoclip.data.synthetic import simulate_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import encode_videos

    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    transform = VideoTransform(model.preprocess_config)
    train, held_out = (
        open_dataset(
            simulate_dataset(tmp_path / name, n=24, seed=seed, size=32, frames=32, progress=False),
            None,
            transform,
        )
        for name, seed in (("train", 0), ("held_out", 7))
    )
    reference = fit_ood(model, train, held_out)
    assert model.ood_reference is reference and reference.calibration["held_out_videos"] == 24

    def scores(data):
        return score_ood(model, encode_videos(model, data, progress=False).ood_features)

    simulated, simulated_flags = scores(held_out)
    real, real_flags = scores([get_testdata_file("color3d_jpeg_baseline.dcm")])
    assert real_flags.tolist() == [True] and not simulated_flags.any()
    assert real[0] > 1.5 * simulated.max(), (real, simulated)
