"""Acquisition perturbations: each does what it says, strength 0 is the identity, the seed
decides the draws, specs parse or fail clearly, and a perturbed dataset differs from the
clean one only by the perturbation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from echoclip.data.datasets import open_dataset
from echoclip.data.perturb import (
    MODERATE,
    PERTURBATIONS,
    SHADOW_EDGE_DEG,
    Perturbation,
    PerturbedDataset,
    parse_perturbations,
    perturbation_rng,
    register_perturbation,
    shadow_half_width,
)
from echoclip.data.transforms import PreprocessConfig, VideoTransform
from echoclip.data.video import Video
from echoclip.errors import ConfigError

BUILT_IN = ("depth_attenuation", "shadow", "speckle", "gain", "blur", "resolution", "frame_rate")
RANDOM = ("shadow", "speckle")  # continuous draws: another video index always differs


def uniform(value: int = 160, t: int = 3, h: int = 64, w: int = 96, fps: float = 50.0) -> Video:
    return Video(np.full((t, h, w, 3), value, np.uint8), fps)


def texture(t: int = 3, h: int = 64, w: int = 64, seed: int = 0) -> Video:
    """Grey noise over a bright rectangle: fine detail and a coarse shape."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(40, 120, size=(t, h, w, 1)).astype(np.float32)
    frames[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] += 120
    return Video(np.repeat(frames, 3, axis=-1).astype(np.uint8), 50.0)


def high_frequency_energy(frames: np.ndarray, axis: int | None = None) -> float:
    """Energy of the finest differences (along ``axis``: 1 rows, 2 columns; both by default)."""
    x = frames[..., 0].astype(np.float64)
    axes = (1, 2) if axis is None else (axis,)
    return float(sum((np.diff(x, axis=a) ** 2).mean() for a in axes))


def angles(h: int, w: int) -> np.ndarray:
    dy = np.arange(h)[:, None]
    dx = np.arange(w)[None, :] - (w - 1) / 2
    return np.degrees(np.arctan2(dx, dy))


def test_the_built_in_perturbations_are_registered():
    assert set(BUILT_IN) <= set(PERTURBATIONS.names())


@pytest.mark.parametrize("name", BUILT_IN)
def test_strength_zero_is_the_identity(name):
    video = texture()
    assert Perturbation(name, 0.0)(video, seed=3, index=5) is video
    raw = PERTURBATIONS.get(name)(video, 0.0, perturbation_rng(3, 5, name))  # the function itself too
    assert raw.fps == video.fps and np.array_equal(raw.frames, video.frames)


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_same_seed_gives_the_same_clip(name):
    video = texture()
    a = Perturbation(name, 0.7)(video, seed=1, index=4)
    b = Perturbation(name, 0.7)(video, seed=1, index=4)
    assert a.fps == b.fps and np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, video.frames) or a.fps != video.fps  # it did something


@pytest.mark.parametrize("name", RANDOM)
def test_another_index_or_seed_draws_anew(name):
    video = uniform()
    p = Perturbation(name, MODERATE)
    first = p(video, seed=0, index=0).frames
    assert not np.array_equal(first, p(video, seed=0, index=1).frames)
    assert not np.array_equal(first, p(video, seed=1, index=0).frames)


def test_a_strength_sweep_keeps_the_draws():
    """The shadow stays where it is as it darkens: same centre at 0.25 and at 1."""
    video = uniform(200)
    mild = Perturbation("shadow", 0.25)(video, seed=0, index=2).frames[0, ..., 0] < 200
    severe = Perturbation("shadow", 1.0)(video, seed=0, index=2).frames[0, ..., 0] < 200
    assert mild.any() and (severe | ~mild).all()  # the mild wedge lies inside the severe one


def test_a_shadow_darkens_its_wedge_and_nothing_outside():
    video = uniform(200, h=80, w=120)
    strength = 0.5
    out = Perturbation("shadow", strength)(video, seed=0, index=7).frames
    changed = (out != video.frames).any(axis=-1)
    assert changed.any() and (changed == changed[0]).all()  # the same wedge in every frame
    assert (out <= video.frames).all()
    theta = angles(80, 120)[changed[0]]
    span = 2 * (shadow_half_width(strength) + 3 * SHADOW_EDGE_DEG)
    assert theta.max() - theta.min() <= span + 1.0  # a wedge from the apex, no wider than its edges
    centre = (theta.max() + theta.min()) / 2
    core = np.abs(angles(80, 120) - centre) < shadow_half_width(strength) - 1.0
    core[:4] = False  # near the apex a pixel spans many angles
    assert np.abs(out[0][core].astype(int) - 200 * (1 - strength)).max() <= 1
    assert (~changed[0]).sum() > changed[0].sum()  # most of the frame untouched


def test_depth_attenuation_darkens_deeper_rows_more():
    video = uniform(200)
    out = Perturbation("depth_attenuation", MODERATE)(video).frames[0, ..., 0].astype(float)
    rows = out.mean(axis=1)
    assert (np.diff(rows) < 0).all()
    assert out[-1, 48] == pytest.approx(200 * math.exp(-1.5), abs=1)  # bottom centre: exp(-3 s)
    severe = Perturbation("depth_attenuation", 1.0)(video).frames[0, ..., 0].astype(float)
    assert (severe[1:] <= out[1:]).all() and severe[-1].mean() < out[-1].mean()


def test_speckle_keeps_the_mean_and_raises_the_variance():
    video = uniform(100, t=4)
    out = Perturbation("speckle", MODERATE)(video, seed=0, index=0).frames.astype(float)
    assert out.mean() == pytest.approx(100, rel=0.02)
    assert out.std() == pytest.approx(100 * 0.523 * MODERATE, rel=0.1)
    assert (out[..., 0] == out[..., 2]).all()  # one factor for the three channels
    mild = Perturbation("speckle", 0.25)(video, seed=0, index=0).frames.astype(float)
    assert 0 < mild.std() < out.std()


def test_gain_goes_up_or_down_and_clips():
    video = uniform(100, t=1)
    seen = {int(Perturbation("gain", MODERATE)(video, index=i).frames[0, 0, 0, 0]) for i in range(20)}
    assert seen == {50, 200}  # ±6 dB, each direction for some videos
    severe = {int(Perturbation("gain", 1.0)(video, index=i).frames.max()) for i in range(20)}
    assert severe == {25, 255}  # ×4 clipped, or ×0.25


def test_blur_lowers_high_frequency_energy_more_laterally():
    video = texture()
    out = Perturbation("blur", MODERATE)(video).frames
    assert high_frequency_energy(out) < 0.5 * high_frequency_energy(video.frames)
    lateral = high_frequency_energy(out, axis=2) / high_frequency_energy(video.frames, axis=2)
    axial = high_frequency_energy(out, axis=1) / high_frequency_energy(video.frames, axis=1)
    assert lateral < axial  # the beam is wider than the pulse is long
    assert out.mean() == pytest.approx(video.frames.mean(), rel=0.02)


def test_resolution_loses_fine_detail_but_keeps_the_shape():
    video = texture()
    out = Perturbation("resolution", MODERATE)(video).frames
    assert out.shape == video.frames.shape
    assert high_frequency_energy(out) < 0.5 * high_frequency_energy(video.frames)

    def coarse(f: np.ndarray) -> np.ndarray:  # 8x8 block means: the shape without the detail
        return f[0, ..., 0].astype(float).reshape(8, 8, 8, 8).mean(axis=(1, 3))

    a, b = coarse(out).ravel(), coarse(video.frames).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99 and a.mean() == pytest.approx(b.mean(), abs=1)


def test_frame_rate_lowers_fps_and_frame_count():
    video = Video(
        np.arange(32, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3), 50.0
    )
    out = Perturbation("frame_rate", MODERATE)(video, seed=0, index=0)  # one frame in three
    first = int(out.frames[0, 0, 0, 0])
    assert out.fps == pytest.approx(50 / 3) and first < 3
    assert out.num_frames == len(range(first, 32, 3))
    assert np.array_equal(out.frames[:, 0, 0, 0], np.arange(first, 32, 3))
    assert (
        Perturbation("frame_rate", 0.25)(video).fps == 25.0
        and Perturbation("frame_rate", 1.0)(video).fps == 12.5
    )


def test_parse_perturbations():
    assert parse_perturbations("shadow:0.5,blur") == [
        Perturbation("shadow", 0.5),
        Perturbation("blur", MODERATE),
    ]
    assert parse_perturbations([" speckle:0.25 ", "gain:1"]) == [
        Perturbation("speckle", 0.25),
        Perturbation("gain", 1.0),
    ]
    assert [p.label for p in parse_perturbations("blur:0.25,blur:1")] == ["blur:0.25", "blur:1"]
    assert Perturbation("depth_attenuation", 0.25).folder == "depth_attenuation-0.25"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("bogus", "unknown perturbation 'bogus'"),
        ("shadow,blurr:0.3", "unknown perturbation 'blurr'"),
        ("blur:1.5", "outside [0, 1]"),
        ("blur:-0.1", "outside [0, 1]"),
        ("blur:nan", "outside [0, 1]"),
        ("blur:strong", "not a number"),
        ("", "no perturbation given"),
        ("blur,blur:0.5", "given twice"),
    ],
)
def test_a_bad_spec_is_a_config_error_naming_the_choices(spec, says):
    with pytest.raises(ConfigError) as error:
        parse_perturbations(spec)
    assert says in str(error.value)
    if "unknown" in says or "no perturbation" in says:
        assert all(name in str(error.value) for name in BUILT_IN)


def test_users_register_their_own():
    @register_perturbation("test_invert")
    def invert(frames, strength, rng):
        return (frames * (1 - strength) + (255 - frames.astype(np.float32)) * strength).astype(np.uint8)

    try:
        (spec,) = parse_perturbations("test_invert:1")
        assert np.array_equal(spec(uniform(10)).frames, uniform(245).frames)
        with pytest.raises(ConfigError, match="registered already"):
            register_perturbation("test_invert")(lambda f, s, r: f)
    finally:
        PERTURBATIONS.pop("test_invert")


# ---------------------------------------------------------------------------------------
# datasets


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    from echoclip.data.synthetic import simulate_dataset

    return simulate_dataset(
        tmp_path_factory.mktemp("perturb") / "sim", n=5, seed=0, size=32, frames=32, fps=25.0, progress=False
    )


def _dataset(sim: Path):
    return open_dataset(sim, None, VideoTransform(PreprocessConfig(image_size=16, num_frames=8, fps=12.5)))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_a_strength_zero_dataset_gives_the_clean_items(sim):
    clean = _dataset(sim)
    perturbed = PerturbedDataset(_dataset(sim), Perturbation("shadow", 0.0))
    assert len(perturbed) == len(clean) and perturbed.table is not None
    for i in range(len(clean)):
        a, b = clean[i], perturbed[i]
        assert a.keys() == b.keys()
        assert all(_same(a[k], b[k]) for k in a), i


def test_a_perturbed_dataset_changes_the_clip_and_keeps_the_scale(sim):
    clean = _dataset(sim)
    for spec in ("shadow:1", "resolution:1", "frame_rate:1"):
        perturbed = PerturbedDataset(_dataset(sim), spec, seed=0)
        a, b = clean[0], perturbed[0]
        assert b["video"].shape == a["video"].shape  # the sampler resamples to the model's frames
        assert not torch.equal(a["video"], b["video"]), spec
        assert _same(a["cm_per_px"], b["cm_per_px"]) and b["study_id"] == a["study_id"]
        again = PerturbedDataset(_dataset(sim), spec, seed=0)[0]
        assert torch.equal(again["video"], b["video"])


def test_an_unreadable_video_is_skipped_and_counted(sim, tmp_path):
    import shutil

    copy = tmp_path / "sim"
    shutil.copytree(sim, copy)
    ds = _dataset(copy)
    ds.video_path(1).write_bytes(b"not a video")
    perturbed = PerturbedDataset(ds, "speckle")
    assert perturbed[1] is None and len(perturbed.skipped) == 1
    assert perturbed[0] is not None


def test_a_dataset_of_ready_clips_cannot_be_perturbed():
    with pytest.raises(ConfigError, match="reads video files"):
        PerturbedDataset([{"video": torch.zeros(3, 8, 16, 16)}], "blur")
