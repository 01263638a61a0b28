"""The OOD reference: its score and threshold by hand, saved with the model and loaded back,
ignored when stale or absent, and a real echo cine scoring below simulated ones."""

from __future__ import annotations

import importlib.metadata
import logging
import math

import numpy as np
import pytest
import torch

from echoclip.errors import ModelError
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


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_score_is_the_mean_similarity_to_the_k_nearest_reference_rows():
    reference = fit_reference(np.eye(4, dtype=np.float32), k=2)
    query = np.array([[1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [np.nan] * 4], dtype=np.float32)
    scores = reference.score(query)
    # unit(1,1,0,0) is cos 45° from its two nearest rows; (2,0,0,0) is scaled to (1,0,0,0): (1 + 0) / 2
    np.testing.assert_allclose(scores[:2], [math.sqrt(0.5), 0.5], atol=1e-3)
    assert math.isnan(scores[2])
    assert reference.flag(query) is None  # not calibrated: no threshold, no flags
    assert fit_reference(np.eye(4), k=10).score(np.eye(4)[:1])[0] == pytest.approx(0.25)  # k > rows: all rows


def test_calibration_flags_at_most_the_quantile_of_held_out_videos_and_records_it():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    reference = fit_reference(
        _unit(centre + 0.5 * rng.normal(size=(300, 16))), k=5, max_reference=100, seed=1
    )
    assert reference.embeddings.shape == (100, 16) and reference.embeddings.dtype == torch.float16
    held_out = _unit(centre + 0.5 * rng.normal(size=(200, 16)))
    calibrated = reference.calibrate(held_out, quantile=0.025)
    c = calibrated.calibration
    assert c["quantile"] == 0.025 and c["held_out_videos"] == 200 and c["held_out_below"] == 5
    assert c["train_videos"] == 300 and c["reference_rows"] == 100 and c["threshold"] == calibrated.threshold
    assert calibrated.flag(held_out).sum() == 5
    unlike = _unit(-centre + 0.5 * rng.normal(size=(20, 16)))  # the other side of the sphere
    assert calibrated.flag(unlike).all()
    assert reference.threshold is None  # calibrate returns a new reference


def test_saved_with_the_model_and_loaded_back(tmp_path, tokenizer):
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(50, model.config.embed_dim)))
    reference = fit_reference(emb, k=3, fingerprint=weights_fingerprint(model)).calibrate(emb[:20])
    model.ood_reference = reference
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / OOD_FILE).is_file()
    loaded = load_model(tmp_path / "m").ood_reference
    assert loaded is not None and loaded.k == 3 and loaded.threshold == pytest.approx(reference.threshold)
    assert loaded.calibration == reference.calibration
    assert torch.equal(loaded.embeddings, reference.embeddings)
    np.testing.assert_allclose(loaded.score(emb), reference.score(emb))


def test_a_model_directory_without_the_file_has_no_reference(tmp_path, tokenizer):
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.ood_reference is None and load_ood(tmp_path / "m") is None
    scores, flags = score_ood(loaded, np.ones((3, model.config.embed_dim)))
    assert np.isnan(scores).all() and flags is None


def test_a_reference_of_other_weights_is_never_used(tmp_path, tokenizer, caplog):
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    emb = np.eye(4, model.config.embed_dim)
    model.ood_reference = fit_reference(emb, fingerprint=weights_fingerprint(model)).calibrate(emb)
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
    with pytest.raises(ValueError, match="k must be at least 1"):
        OODReference(torch.eye(4), k=0)


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
    from echoclip.models.embed import embed_videos

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
    reference = fit_ood(model, train, held_out, k=5)
    assert model.ood_reference is reference and reference.calibration["held_out_videos"] == 24

    simulated, simulated_flags = score_ood(model, embed_videos(model, held_out, progress=False))
    real, real_flags = score_ood(model, embed_videos(model, [get_testdata_file("color3d_jpeg_baseline.dcm")]))
    assert real_flags.tolist() == [True] and not simulated_flags.any()
    assert real[0] < simulated.min() - 0.01, (real, simulated)
