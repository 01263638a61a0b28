"""Acquisition realism: each artefact does what it says, and only that; seeds reproduce."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from echoclip.data.synthetic.acquisition import Acquired, draw_acquisition, fan_gain
from echoclip.data.synthetic.anatomy import cardiac_state, make_patient, rng_for
from echoclip.data.synthetic.realism import REALISMS, AcquisitionRealism, get_realism
from echoclip.data.synthetic.render import _fan_pixels, _polar, render_view


def _render(seed: int, knobs: AcquisitionRealism | None, view: str = "A4C"):
    state = cardiac_state(make_patient(seed), 0, seed)
    return render_view(state, view, 96, 48, 50.0, rng_for(seed, 3), knobs)


def test_rib_shadow_darkens_its_wedge_and_nothing_else() -> None:
    clean = _render(1, AcquisitionRealism())
    ribbed = _render(1, AcquisitionRealism(rib_shadow=1.0))
    centre, width = ribbed.acquisition.rib
    sector = ribbed.sector
    pixels, _, _ = _fan_pixels(sector)
    r, theta = (v.ravel()[pixels] for v in _polar(sector))
    across = (theta / sector.half_angle + 1) / 2
    wedge = (np.abs(across - centre) < 0.5 * width) & (r > 0.3 * sector.radius)
    # beyond the wedge by more than the point spread's reach (about 6 px of arc)
    beyond_px = (np.abs(across - centre) - 1.5 * width) * 2 * sector.half_angle * r
    far = (beyond_px > 6.0) & (r > 0.3 * sector.radius)
    a = clean.frames[..., 0].reshape(clean.frames.shape[0], -1)[:, pixels].astype(float)
    b = ribbed.frames[..., 0].reshape(ribbed.frames.shape[0], -1)[:, pixels].astype(float)
    assert b[:, wedge].mean() < 0.4 * a[:, wedge].mean()
    np.testing.assert_array_equal(a[:, far], b[:, far])


def test_the_same_seed_gives_the_same_clip_and_presets_share_the_heart() -> None:
    real = get_realism("real").acquisition
    one, two = _render(4, real), _render(4, real)
    np.testing.assert_array_equal(one.frames, two.frames)
    # the acquisition draws come from their own stream: at the same frame rate, the
    # heart beats the same under any preset
    clean = _render(4, None)
    same_rate = _render(4, replace(real, fps=None))
    assert clean.timing == same_rate.timing
    assert clean.lv_volumes.tolist() == same_rate.lv_volumes.tolist()


def test_draws_follow_the_knobs() -> None:
    knobs = get_realism("real").acquisition
    rng = np.random.default_rng(0)
    draws = [draw_acquisition(knobs, "A4C", rng) for _ in range(3000)]
    share = np.mean([d.doppler_box for d in draws])
    assert abs(share - knobs.doppler_box) < 0.02
    assert abs(np.mean([d.rib is not None for d in draws]) - knobs.rib_shadow) < 0.025
    fps = np.array([d.fps for d in draws])
    assert fps.min() >= knobs.fps[0] and fps.max() <= knobs.fps[1]
    assert {d.vendor for d in draws} == set(knobs.vendors)
    # a parasternal view is never foreshortened
    assert not any(draw_acquisition(knobs, "PLAX", rng).foreshortened for _ in range(200))
    clean = draw_acquisition(REALISMS.get("clean").acquisition, "A4C", rng)
    assert clean == Acquired(dynamic_range=clean.dynamic_range, half_angle_deg=40.0, tilt=0.0)


def test_gain_is_one_without_artefacts() -> None:
    r = np.linspace(0, 80, 50)
    theta = np.linspace(-0.6, 0.6, 50)
    np.testing.assert_allclose(fan_gain(Acquired(), r, theta, 80.0, math.radians(40)), 1.0)


def test_frame_rate_comes_from_the_acquisition() -> None:
    rendered = _render(2, AcquisitionRealism(fps=(30.0, 90.0)))
    assert 30.0 <= rendered.fps <= 90.0 and rendered.fps == round(rendered.fps)
    assert rendered.frames.shape[0] == round(48 * rendered.fps / 50.0)  # the same 0.96 s
    period = 60.0 / cardiac_state(make_patient(2), 0, 2).heart_rate
    assert rendered.timing.period == pytest.approx(period * rendered.fps, rel=1e-6)


def test_dual_screen_freezes_the_right_half_and_squeezes_the_masks() -> None:
    dual = _render(3, AcquisitionRealism(dual_screen=1.0))
    half = dual.frames.shape[2] // 2
    right = dual.frames[:, :, half + 1 :]
    assert (right == right[:1]).all()
    assert not (dual.frames[:, :, :half] == dual.frames[:1, :, :half]).all()
    assert not dual.lv_mask_ed[:, half + 1 :].any() and dual.lv_mask_ed.any()
    assert dual.cm_per_px_x == pytest.approx(2 * dual.cm_per_px)


def test_colour_doppler_paints_only_inside_its_box() -> None:
    plain = _render(5, AcquisitionRealism())
    flow = _render(5, AcquisitionRealism(doppler_box=1.0))
    fan = plain.sector.mask()
    assert (plain.frames[..., 0] == plain.frames[..., 2])[:, fan].all()
    coloured = (flow.frames[..., 0].astype(int) != flow.frames[..., 2].astype(int)) & fan
    assert coloured.any()
    assert not coloured[:, : flow.frames.shape[1] // 5].any()  # not in the near field
