"""Realism figures: histogram distance, speckle SNR, the tissue/blood rule, the patch classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from echoclip.data.synthetic import simulate_study
from echoclip.data.synthetic.fidelity import (
    PATCH_FEATURES,
    colour_flow,
    fan_mask,
    grey_histogram,
    histogram_distance,
    patch_auc,
    patch_features,
    speckle_snr,
    tissue_blood,
    to_grey,
)


def _rayleigh(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 30.0) -> np.ndarray:
    return np.clip(rng.rayleigh(scale, size=shape), 0, 255).astype(np.float32)


def test_identical_pixels_are_at_distance_zero():
    frames = _rayleigh(np.random.default_rng(0), (4, 32, 32))
    assert histogram_distance(frames, frames.copy()) == 0.0
    assert histogram_distance(frames, frames.copy(), "jensen_shannon") == 0.0


def test_wasserstein_is_the_shift_in_grey_levels():
    frames = _rayleigh(np.random.default_rng(0), (4, 32, 32), scale=20.0)
    assert histogram_distance(frames, np.clip(frames + 10, 0, 255)) == pytest.approx(10.0, abs=0.1)
    assert histogram_distance(np.zeros(10), np.full(10, 255)) == 255.0
    assert histogram_distance(np.zeros(10), np.full(10, 255), "jensen_shannon") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown histogram metric"):
        histogram_distance(frames, frames, "l2")


def test_grey_histogram_is_normalised():
    hist = grey_histogram(np.array([0, 0, 255, 300, -4]))
    assert hist.shape == (256,) and hist.sum() == pytest.approx(1.0)
    assert hist[0] == pytest.approx(0.6) and hist[255] == pytest.approx(0.4)


def test_speckle_snr_of_rayleigh_noise():
    values = np.random.default_rng(0).rayleigh(40.0, size=200_000)
    assert speckle_snr(values) == pytest.approx(math.sqrt(math.pi / (4 - math.pi)), abs=0.02)  # 1.91
    assert math.isnan(speckle_snr(np.full(5, 7.0)))
    assert math.isnan(speckle_snr(np.array([])))


def test_to_grey_takes_luma_and_keeps_grey():
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    rgb[..., 1] = 100
    assert np.allclose(to_grey(rgb), 58.7)
    assert to_grey(np.full((4, 4), 9, np.uint8)).dtype == np.float32


def test_fan_mask_of_a_simulated_study_is_its_sector():
    study = simulate_study(0, size=64, frames=8, fps=10.0)
    fan = fan_mask(study.video.frames)
    truth = study.truth.sector_mask
    assert (fan & truth).sum() / (fan | truth).sum() > 0.95  # the burnt-in text and ECG outside are dropped
    assert not fan_mask(np.zeros((3, 16, 16))).any()


def test_tissue_and_blood_follow_brightness_not_the_source():
    rng = np.random.default_rng(0)
    frame = _rayleigh(rng, (64, 64), scale=8.0)
    frame[:, 32:] = _rayleigh(rng, (64, 32), scale=60.0)  # right half bright, left half dark
    fan = np.ones((64, 64), bool)
    tissue, blood = tissue_blood(frame, fan)
    assert tissue.any() and blood.any() and not (tissue & blood).any()
    assert tissue[:, 34:].mean() > 0.3 and not tissue[:, :30].any()
    assert blood[:, :30].mean() > 0.3 and not blood[:, 34:].any()
    assert not (tissue | blood)[: round(0.15 * 64)].any()  # the near field is neither
    tissue_only, _ = tissue_blood(frame, np.zeros_like(fan))
    assert not tissue_only.any()


def test_patch_features_stay_inside_the_fan():
    frames = _rayleigh(np.random.default_rng(0), (3, 48, 48))
    fan = np.zeros((48, 48), bool)
    fan[10:30, 10:30] = True
    frames[:, ~fan] = 255.0  # a patch reaching outside would see it
    features = patch_features(frames, fan, 200, np.random.default_rng(1))
    assert features.shape == (200, len(PATCH_FEATURES))
    assert features[:, 0].max() < 255.0 and np.isfinite(features).all()
    with pytest.raises(ValueError, match="no 32×32 patch fits"):
        patch_features(frames, fan, 10, np.random.default_rng(1), patch=32)


def test_patch_auc_is_chance_for_one_source_and_near_one_for_two():
    rng = np.random.default_rng(0)
    fan = np.ones((64, 64), bool)
    frames = _rayleigh(rng, (64, 64, 64))
    a = patch_features(frames, fan, 600, rng)
    same = patch_features(frames, fan, 600, rng)  # identical images, patches drawn again
    b = patch_features(_rayleigh(rng, (64, 64, 64)), fan, 600, rng)  # another draw of the same speckle
    smooth = ndimage.uniform_filter(_rayleigh(rng, (64, 64, 64)), size=(1, 3, 3))  # correlated speckle
    c = patch_features(smooth, fan, 600, rng)
    assert abs(patch_auc(a, same) - 0.5) < 0.1
    assert abs(patch_auc(a, b) - 0.5) < 0.1
    assert patch_auc(a, c) > 0.95
    assert patch_auc(a, c) == patch_auc(a, c)  # seeded


def test_colour_flow_finds_doppler_pixels_and_not_a_tinted_grey_map():
    from echoclip.data.synthetic.realism import AcquisitionRealism, Realism

    sepia = Realism("sepia", AcquisitionRealism(vendors=("vendor_c",)))
    doppler = Realism("doppler", AcquisitionRealism(doppler_box=1.0))
    tinted = simulate_study(5, view="A4C", size=64, frames=32, realism=sepia)
    assert (tinted.video.frames[..., 0] != tinted.video.frames[..., 2]).any()  # it is tinted
    fan = tinted.truth.sector_mask
    assert not colour_flow(tinted.video.frames)[:, fan].any()
    flow = simulate_study(5, view="A4C", size=64, frames=32, realism=doppler)
    colour = colour_flow(flow.video.frames)[:, fan]
    painted = (flow.video.frames[..., 0] != flow.video.frames[..., 2])[:, fan]
    assert colour.any() and not (colour & ~painted).any()  # only painted pixels are colour
    assert not colour_flow(to_grey(flow.video.frames)).any()  # grey frames have none
