"""Views of a simulated study: which findings each view shows, and studies of several videos."""

from __future__ import annotations

import numpy as np
import pytest

from echoclip.data.synthetic import (
    FINDING_VIEWS,
    FINDINGS,
    VIEWS,
    cardiac_state,
    make_patient,
    simulate_study,
    with_findings,
)
from echoclip.errors import DataError

# ---------------------------------------------------------------------------------------
# which views show which findings, by pixels

# patients with no finding and no device of their own at their first study
_PLAIN_SEEDS = (6, 11)
# a finding is a larger dark space (a chamber, fluid) or more bright tissue (a wall)
_BRIGHTER = {"lv_hypertrophy"}


def _area_cm2(study, bright: bool) -> float:
    """Mean area (cm²) of the fan that is dark (below 20) or bright (above 90) over the clip."""
    grey = study.video.frames[..., 0][:, study.truth.sector_mask]
    count = (grey > 90) if bright else (grey < 20)
    return float(count.sum(axis=1).mean()) * study.truth.cm_per_px**2


def test_plain_seeds_have_no_findings() -> None:
    for seed in _PLAIN_SEEDS:
        state = cardiac_state(make_patient(seed), 0, seed)
        assert state.findings == () and state.devices == ()


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_shows_in_its_views_and_nowhere_else(finding: str) -> None:
    assert set(FINDING_VIEWS) == set(FINDINGS)
    options = {"size": 112, "frames": 16, "fps": 25.0}
    for seed in _PLAIN_SEEDS:
        for view in VIEWS:
            without = simulate_study(seed, view=view, findings=(), **options)
            with_it = simulate_study(seed, view=view, findings=(finding,), **options)
            assert finding in with_it.truth.findings
            if view not in FINDING_VIEWS[finding]:
                assert finding not in with_it.truth.visible_findings
                assert np.array_equal(without.video.frames, with_it.video.frames), (finding, view)
                continue
            assert with_it.truth.visible_findings == (finding,)
            fan = without.truth.sector_mask
            delta = np.abs(
                with_it.video.frames[..., 0].astype(int) - without.video.frames[..., 0].astype(int)
            )
            changed = (delta[:, fan] > 30).sum(axis=1).mean()
            assert changed >= 100, (finding, view, seed, changed)
            bright = finding in _BRIGHTER
            grown = _area_cm2(with_it, bright) - _area_cm2(without, bright)
            assert grown > 0.5, (finding, view, seed, grown)


def test_with_findings_sets_exactly_the_findings_asked_for() -> None:
    state = cardiac_state(make_patient(6), 0, 6)
    both = with_findings(state, ("rv_dilation", "pericardial_effusion"))
    assert both.findings == ("rv_dilation", "pericardial_effusion")
    assert both.severity == {"rv_dilation": "moderate", "pericardial_effusion": "moderate"}
    assert both.effusion_cm > 0 and both.rv_scale > state.rv_scale
    assert both.edv == state.edv and both.wall_cm == state.wall_cm  # the rest is unchanged
    back = with_findings(both, ())
    assert back.findings == () and back.severity == {} and back.effusion_cm == 0
    with pytest.raises(DataError, match="unknown findings"):
        with_findings(state, ("tamponade",))
