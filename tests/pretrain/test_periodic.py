"""Cardiac period estimation and the periodic contrastive term."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.data.synthetic.study import simulate_study
from echoclip.data.video import Video
from echoclip.errors import DataError
from echoclip.pretrain import estimate_period
from echoclip.pretrain.periodic import estimate_periods, periodic_infonce, periodic_pairs


def beating_disc(
    period: float, frames: int = 48, size: int = 32, noise: float = 0.2, seed: int = 0
) -> np.ndarray:
    """uint8 [T, H, W, 3]: a dark disc that shrinks once per period in speckle-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for t in range(frames):
        r = size * (0.3 - 0.08 * math.sin(2 * math.pi * t / period) ** 2)
        img = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r, 0.2, 0.7)
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
        out.append(np.repeat((img * 255).astype(np.uint8)[..., None], 3, axis=-1))
    return np.stack(out)


def test_period_of_simulated_studies_within_10_percent():
    """200 simulated clips with heart rates 50-120 bpm: >= 90 % within +-10 % of the true period."""
    fps, hits, errors, seed = 12.0, 0, [], 0
    while len(errors) < 200:
        study = simulate_study(seed, size=32, frames=36, fps=fps)
        seed += 1
        if not 50 <= study.truth.heart_rate <= 120:
            continue
        true = fps * 60 / study.truth.heart_rate
        est = estimate_period(study.video)
        errors.append(abs(est - true) / true if math.isfinite(est) else math.inf)
        hits += errors[-1] <= 0.10
    assert hits >= 180, f"{hits}/200 within 10 %; worst errors {sorted(errors)[-10:]}"


@pytest.mark.parametrize("period", [5.5, 8.25, 13.0])
def test_sub_frame_period_of_a_clean_beat(period):
    frames = beating_disc(2 * period, frames=60)  # sin^2 beats twice per sine period
    assert estimate_period(frames) == pytest.approx(period, rel=0.04)


def test_input_forms_agree():
    frames = beating_disc(16.0)
    a = estimate_period(frames)
    assert estimate_period(frames.mean(axis=-1)) == pytest.approx(a, rel=1e-4)
    assert estimate_period(torch.from_numpy(frames)) == pytest.approx(a, rel=1e-4)
    assert estimate_period(Video(frames, 25.0, {})) == pytest.approx(a, rel=1e-4)
    batch = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float()  # model input layout
    assert float(estimate_periods(batch)[0]) == pytest.approx(a, rel=1e-3)


def test_batch_periods_are_fp32_inside_bf16_autocast():
    # pretraining steps run under autocast; the periods come from pixels and stay exact
    batch = torch.from_numpy(beating_disc(16.0)).permute(3, 0, 1, 2)[None].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        periods = estimate_periods(batch)
    assert periods.dtype == torch.float32
    assert float(periods[0]) == pytest.approx(float(estimate_periods(batch)[0]), rel=1e-6)


def test_no_beat_gives_nan():
    still = np.repeat(beating_disc(16.0, noise=0.0)[:1], 40, axis=0)
    assert math.isnan(estimate_period(still))
    assert math.isnan(estimate_period(beating_disc(16.0, frames=3)))
    short = beating_disc(40.0, frames=24)  # less than one beat in view
    assert math.isnan(estimate_period(short))


def test_bad_shape_is_an_error():
    with pytest.raises(DataError, match="time first"):
        estimate_period(np.zeros((32, 32)))


def test_periodic_pairs():
    pos, neg = periodic_pairs(16, 5.0)
    assert pos[0].nonzero().flatten().tolist() == [5, 10, 15]
    assert pos[7].nonzero().flatten().tolist() == [2, 12]
    # the anchor and its neighbours, and the neighbours of positives, are never negatives
    for t in range(16):
        for j in range(16):
            if abs(j - t) <= 1 or any(abs(j - (t + k * 5)) <= 1 for k in (-3, -2, -1, 1, 2, 3)):
                assert not neg[t, j]
    assert neg[0].nonzero().flatten().tolist() == [2, 3, 7, 8, 12, 13]
    assert not (pos & neg).any()
    nothing, _ = periodic_pairs(16, float("nan"))
    assert not nothing.any()


def test_periodic_infonce_prefers_phase_features():
    t, period = 16, 6.0
    phase = torch.arange(t) * 2 * math.pi / period
    aligned = torch.stack([phase.cos(), phase.sin()], dim=-1)[None].repeat(3, 1, 1)  # [3, T, 2]
    shuffled = aligned[:, torch.randperm(t, generator=torch.Generator().manual_seed(0))]
    periods = torch.full((3,), period)
    good, anchors = periodic_infonce(aligned, periods)
    bad, _ = periodic_infonce(shuffled, periods)
    assert anchors == 3 * t  # every frame of a 16-frame clip has a partner 6 frames away
    assert float(good) < float(bad) - 1.0

    feats = torch.randn(2, t, 8, requires_grad=True)
    loss, n = periodic_infonce(feats, torch.tensor([period, float("nan")]))
    loss.backward()
    assert n == t and feats.grad[0].abs().sum() > 0 and feats.grad[1].abs().sum() == 0
    none, n = periodic_infonce(feats, torch.tensor([float("nan"), 1.0]))
    assert n == 0 and float(none.detach()) == 0.0 and none.requires_grad


def _clip_periods(data, heart_rate: bool):
    """Each clip's period from a dataset of ``data`` (the demo's clip rate) and its true period."""
    from echoclip.data.augment import TrainTransform
    from echoclip.data.datasets import Manifest
    from echoclip.data.transforms import PreprocessConfig

    table = pd.read_parquet(data / "manifest.parquet")
    if not heart_rate:
        table.drop(columns="heart_rate").to_parquet(data / "no_rate.parquet")
    dataset = Manifest(
        data / ("manifest.parquet" if heart_rate else "no_rate.parquet"),
        transform=TrainTransform(PreprocessConfig(image_size=32, num_frames=16, fps=12.5), seed=0),
    )
    dataset.needs_period = True
    found = np.array([dataset[i]["period"] for i in range(len(dataset))])
    return found, 12.5 * 60 / table["heart_rate"].to_numpy()


def test_clips_get_their_period_from_the_heart_rate_or_the_whole_video(tmp_path):
    """The demo's videos (32 frames at 25 fps, 1.28 s) hold less than the beat and a half a
    clip estimate needs at 50-70 bpm; the dataset gives every clip its study's period."""
    from echoclip.data.synthetic import simulate_dataset

    short = simulate_dataset(tmp_path / "short", n=40, seed=3, size=32, frames=32, fps=25.0, progress=False)
    found, truth = _clip_periods(short, heart_rate=True)
    assert np.abs(found - truth).max() < 1e-3 * truth.max()
    assert (60 * 12.5 / truth <= 70).sum() >= 5  # slow hearts among them

    long = simulate_dataset(tmp_path / "long", n=40, seed=4, size=32, frames=96, fps=25.0, progress=False)
    found, truth = _clip_periods(long, heart_rate=False)  # 3.8 s videos: the whole video's estimate
    within = np.abs(found - truth) <= 0.1 * truth
    assert within.mean() >= 0.95, (found, truth)


def test_pretraining_batches_carry_the_periods_of_their_clips():
    from echoclip.pretrain.objectives import PretrainConfig, clip_periods
    from echoclip.pretrain.views import two_views

    clips = torch.randn(3, 3, 16, 16, 16)
    samples = [
        {"video": c, "index": i, "period": p}
        for i, (c, p) in enumerate(zip(clips, [8.0, 12.5, float("nan")], strict=True))
    ]
    views, stretch = zip(
        *(two_views(c, torch.Generator().manual_seed(i)) for i, c in enumerate(clips)), strict=True
    )
    periods = clip_periods(samples, torch.stack(views), torch.stack(stretch))
    assert periods.shape == (3, 2)
    assert torch.allclose(periods[:2], torch.tensor([[8.0], [12.5]]) * torch.stack(stretch)[:2])
    assert bool((torch.stack(stretch) >= 1.0).all()) and PretrainConfig().periodic_weight > 0
