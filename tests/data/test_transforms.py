"""Clip sampling, cycle estimation, the inference transform and seeded augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echoclip.data.augment import AugmentConfig, TrainTransform, augment_clip, sample_rng
from echoclip.data.cardiac import estimate_period, period_from_heart_rate
from echoclip.data.transforms import (
    ClipSampler,
    PreprocessConfig,
    VideoTransform,
    resize_clip_uint8,
)
from echoclip.data.video import Video


def test_centred_clip_resampled_to_target_fps() -> None:
    sampler = ClipSampler(num_frames=4, fps=25)
    # 100 frames at 50 fps: every 2nd frame, span 7 frames, centred.
    np.testing.assert_array_equal(sampler.indices(100, 50.0), [46, 48, 50, 52])
    assert sampler.output_fps(50.0) == 25


def test_stride_and_first_start() -> None:
    sampler = ClipSampler(num_frames=3, stride=4, start="first")
    np.testing.assert_array_equal(sampler.indices(50, 30.0), [0, 4, 8])


def test_random_start_is_seeded_and_stays_inside() -> None:
    sampler = ClipSampler(num_frames=8, start="random")
    starts = {int(sampler.indices(40, 30.0, sample_rng(0, 0, i))[0]) for i in range(200)}
    assert min(starts) >= 0 and max(starts) <= 32 and len(starts) > 20
    a = sampler.indices(40, 30.0, sample_rng(1, 2, 3))
    np.testing.assert_array_equal(a, sampler.indices(40, 30.0, sample_rng(1, 2, 3)))
    with pytest.raises(ValueError):
        sampler.indices(40, 30.0)  # a random start needs a generator


def test_short_video_loops() -> None:
    np.testing.assert_array_equal(ClipSampler(num_frames=6).indices(4, 30.0), [0, 1, 2, 3, 0, 1])


def test_cycle_spans_exactly_one_beat() -> None:
    sampler = ClipSampler(num_frames=8, cycle=True, start="first")
    period = period_from_heart_rate(75, 50.0)  # 0.8 s at 50 fps = 40 frames
    assert period == pytest.approx(40)
    np.testing.assert_array_equal(sampler.indices(200, 50.0, cycle_frames=period), np.arange(0, 40, 5))
    assert sampler.output_fps(50.0, period) == pytest.approx(10)
    with pytest.raises(ValueError):
        sampler.indices(200, 50.0)  # no cycle length


def _beating(t: int, period: float, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.zeros((t, size, size, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for i in range(t):
        radius = 6 + 4 * np.sin(2 * np.pi * i / period)
        disc = np.hypot(yy - size / 2, xx - size / 2) < radius
        frames[i][disc] = 200
        frames[i] += rng.integers(0, 20, (size, size, 1), dtype=np.uint8)
    return frames


@pytest.mark.parametrize("period", [17.0, 23.5])
def test_estimate_period_finds_the_period(period: float) -> None:
    assert estimate_period(_beating(96, period)) == pytest.approx(period, abs=0.6)


def test_estimate_period_is_nan_without_a_beat() -> None:
    still = np.repeat(_beating(1, 10.0), 40, axis=0)
    assert math.isnan(estimate_period(still))
    assert math.isnan(estimate_period(_beating(3, 10.0)))


def test_video_transform_shape_and_normalisation() -> None:
    cfg = PreprocessConfig(image_size=16, num_frames=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frames = np.full((10, 24, 32, 3), 255, dtype=np.uint8)
    x = VideoTransform(cfg)(Video(frames, fps=30))
    assert x.shape == (3, 4, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))
    assert VideoTransform(cfg).sampler == ClipSampler(num_frames=4, fps=None, start="center")


def test_resize_clip_uint8_keeps_values_and_size() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    out = resize_clip_uint8(frames, 20)
    assert out.shape == (3, 20, 20, 3) and out.dtype == np.uint8
    flat = np.full((2, 40, 60, 3), 77, dtype=np.uint8)
    assert (resize_clip_uint8(flat, 20) == 77).all()


def _frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)


def test_augmentation_is_a_function_of_the_sample_seed() -> None:
    frames = _frames()
    a = augment_clip(frames, sample_rng(0, 0, 5))
    b = augment_clip(frames, sample_rng(0, 0, 5))
    c = augment_clip(frames, sample_rng(0, 1, 5))  # next epoch
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 4, 32, 32) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1


def test_a_grey_clip_augments_as_its_one_channel_does() -> None:
    """Echo is grey: its three equal channels are augmented once and repeated, with the
    crop, the clip mean and the lookup of the single channel; a colour clip keeps its own."""
    grey = _frames()[..., :1]
    rgb = np.repeat(grey, 3, axis=3)
    for i in range(5):
        one = augment_clip(grey, sample_rng(0, 0, i))
        three = augment_clip(rgb, sample_rng(0, 0, i))
        assert three.shape == (3, 4, 32, 32) and three.is_contiguous()
        for k in range(3):
            assert torch.equal(three[k], one[0])
    colour = rgb.copy()
    colour[..., 2] = 255 - colour[..., 2]
    out = augment_clip(colour, sample_rng(0, 0, 0))
    assert torch.equal(out[0], out[1]) and not torch.allclose(out[0], out[2], atol=0.1)


def test_augmentation_is_mild_and_can_be_turned_off() -> None:
    frames = _frames()
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
    off = AugmentConfig(scale=(1, 1), ratio=(1, 1), brightness=0, contrast=0, gamma=(1, 1))
    assert torch.allclose(augment_clip(frames, sample_rng(0, 0, 0), off), x, atol=1e-6)
    diffs = [(augment_clip(frames, sample_rng(0, 0, i)) - x).abs().mean().item() for i in range(10)]
    assert 0 < np.mean(diffs) < 0.3


def test_intensity_augmentation_matches_the_pixelwise_formula() -> None:
    """The lookup table gives what gamma, contrast around the clip mean and brightness give per pixel."""
    frames = _frames(1)
    only_intensity = AugmentConfig(scale=(1, 1), ratio=(1, 1))
    out = augment_clip(frames, sample_rng(0, 0, 3), only_intensity)
    rng = sample_rng(0, 0, 3)
    rng.uniform(1, 1), rng.uniform(0, 0), rng.integers(0, 1), rng.integers(0, 1)  # the crop's draws
    gamma = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    contrast, brightness = 1 + rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
    x = (frames.transpose(3, 0, 1, 2) / 255.0) ** gamma
    expected = np.clip((x - x.mean()) * contrast + x.mean() + brightness, 0, 1)
    assert gamma != 1 and np.allclose(out.numpy(), expected, atol=1e-6)


def test_crop_resize_is_exact_on_a_flat_clip_and_moves_an_edge() -> None:
    flat = np.full((2, 32, 32, 3), 128, dtype=np.uint8)
    crop_only = AugmentConfig(scale=(0.5, 0.5), brightness=0, contrast=0, gamma=(1, 1))
    assert torch.allclose(
        augment_clip(flat, sample_rng(0, 0, 0), crop_only), torch.full((3, 2, 32, 32), 128 / 255)
    )
    edge = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    edge[:, :, 16:] = 255  # right half bright
    outs = [augment_clip(edge, sample_rng(0, 0, i), crop_only)[0, 0] for i in range(5)]
    assert any(not torch.equal(o, outs[0]) for o in outs)  # where the crop lands moves the edge
    assert all(o[:, 0].max() < 0.5 and o[:, -1].min() > 0.5 for o in outs)  # left stays dark, right bright


def test_train_transform_samples_randomly_and_augments() -> None:
    cfg = PreprocessConfig(image_size=16, num_frames=4)
    train = TrainTransform(cfg, seed=3)
    assert train.sampler.start == "random" and train.seed == 3
    frames = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    plain = VideoTransform(cfg)(frames)
    assert torch.equal(train(frames), plain)  # no generator, no augmentation
    assert not torch.equal(train(frames, sample_rng(3, 0, 0)), plain)


def test_acquisition_augmentation_perturbs_training_clips_reproducibly():
    from echoclip.errors import ConfigError
    from echoclip.train.config import TrainConfig

    frames = np.full((4, 32, 32, 3), 120, dtype=np.uint8)
    plain = AugmentConfig(scale=(1.0, 1.0), brightness=0, contrast=0, gamma=(1, 1))
    shadowed = AugmentConfig(
        scale=(1.0, 1.0),
        brightness=0,
        contrast=0,
        gamma=(1, 1),
        acquisition_p=1.0,
        acquisition_strength=1.0,
        acquisitions=("shadow",),
    )
    clean = augment_clip(frames, sample_rng(0, 0, 0), plain)
    a = augment_clip(frames, sample_rng(0, 0, 0), shadowed)
    assert torch.equal(clean, torch.full_like(clean, 120 / 255))  # off by default: the clip as it was
    assert torch.equal(a, augment_clip(frames, sample_rng(0, 0, 0), shadowed))  # seeded
    assert (a <= clean + 1e-6).all() and (a < clean - 0.05).any()  # a shadow only darkens
    assert (a == clean).float().mean() > 0.3  # ... within its wedge
    config = TrainConfig.from_dict({"augment": {"acquisition_p": 0.2, "acquisitions": ["gain", "blur"]}})
    assert config.augment.acquisition_p == 0.2 and config.augment.acquisitions == ("gain", "blur")
    with pytest.raises(ConfigError, match="unknown perturbation"):
        AugmentConfig(acquisitions=("fog",))
    with pytest.raises(ConfigError, match="acquisition_p"):
        AugmentConfig(acquisition_p=1.5)
    with pytest.raises(ConfigError, match="unknown augment options"):
        AugmentConfig.from_dict({"acquisition": 0.1})
    timing = AugmentConfig(acquisition_p=1.0, acquisitions=("frame_rate",))
    with pytest.raises(ConfigError, match="frame_rate"):
        augment_clip(frames, sample_rng(0, 0, 0), timing)
