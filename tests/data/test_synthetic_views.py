"""Views of a simulated study: which findings each view shows, and studies of several videos."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from echoclip.data.synthetic import (
    FINDING_VIEWS,
    FINDINGS,
    VIEWS,
    cardiac_state,
    make_patient,
    plan_cohort,
    simulate_dataset,
    simulate_reports,
    simulate_study,
    study_videos,
    with_findings,
)
from echoclip.data.synthetic.cohort import study_state
from echoclip.data.synthetic.study import render_study
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


def test_a_dilated_rv_stays_in_the_apical_four_chamber_sector() -> None:
    # a sonographer keeps a large RV in view; drawn in place, it grew past the fan's edge
    # (0.71-0.77 of it inside on three of these patients)
    for seed in (3, 4, 6, 11):
        study = simulate_study(seed, view="A4C", findings=("rv_dilation",), size=112, frames=16, fps=25.0)
        fan = study.truth.sector_mask
        for chamber, least in (("rv", 0.8), ("lv", 0.99)):
            region = study.truth.regions[chamber]
            assert (region & fan).sum() / region.sum() >= least, (seed, chamber)


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


# ---------------------------------------------------------------------------------------
# studies of several views and repeated acquisitions


def test_study_videos_is_seeded_and_keeps_at_least_one_view() -> None:
    views = ("A4C", "A2C", "PLAX", "PSAX")
    assert study_videos(3, views) == [(v, 0) for v in views]  # the default: one video per view
    per_view: dict[int, int] = {}
    for seed in range(300):
        videos = study_videos(seed, views, (1, 3), 0.5)
        assert videos == study_videos(seed, views, (1, 3), 0.5)
        assert videos  # never all views missing
        present = [v for v in views if (v, 0) in videos]
        assert [v for v, _ in videos] == sorted((v for v, _ in videos), key=views.index)  # in order
        for view in present:
            repeats = [k for v, k in videos if v == view]
            assert repeats == list(range(len(repeats))) and 1 <= len(repeats) <= 3
            per_view[len(repeats)] = per_view.get(len(repeats), 0) + 1
    assert set(per_view) == {1, 2, 3}
    assert all(len(study_videos(s, views, 2, 0.0)) == 8 for s in range(5))
    for bad in [0, (2, 1), (0, 3)]:
        with pytest.raises(DataError, match="videos per view"):
            study_videos(0, views, bad)
    with pytest.raises(DataError, match="view_missing"):
        study_videos(0, views, 1, 1.0)


def test_repeated_acquisitions_show_the_same_heart_differently() -> None:
    state = cardiac_state(make_patient(6), 0, 6)
    first = render_study(state, "", 6, "A4C", 64, 16, 25.0)
    again = render_study(state, "", 6, "A4C", 64, 16, 25.0, repeat=0)
    second = render_study(state, "", 6, "A4C", 64, 16, 25.0, repeat=1)
    assert np.array_equal(first.video.frames, again.video.frames)  # repeat 0 is the plain video
    assert not np.array_equal(first.video.frames, second.video.frames)
    assert second.truth.state == first.truth.state  # the same heart


def test_a_multiview_data_set_keeps_one_row_per_video_and_one_report_per_study(tmp_path) -> None:
    views = ("A4C", "A2C", "PLAX", "PSAX")
    options = dict(n=6, seed=2, size=32, frames=16, fps=25.0, views=views, progress=False)
    out = simulate_dataset(tmp_path / "sim", videos_per_view=(1, 3), view_missing=0.3, **options)
    manifest = pd.read_parquet(out / "manifest.parquet")
    files = pd.read_csv(out / "FileList.csv")
    assert len(manifest) == len(files) == len(list((out / "Videos").glob("*.avi")))
    assert manifest["study_id"].nunique() == 6 and len(manifest) > 6
    assert manifest["video_path"].is_unique
    for column in ("study_id", "patient_id", "view", "video_index", "repeat"):
        assert column in manifest
    plans = {study_state(p).study_id: p for p in plan_cohort(6, 2)}
    for study, rows in manifest.groupby("study_id", sort=False):
        expected = study_videos(plans[study].study_seed, views, (1, 3), 0.3)
        assert list(zip(rows["view"], rows["repeat"], strict=True)) == expected
        assert list(rows["video_index"]) == list(range(len(rows)))
        labels = [c for c in manifest if c.startswith(("finding_", "device_"))] + ["report", "ef", "split"]
        assert (rows[labels].nunique() == 1).all()  # the study's report and labels on every video
    assert list(manifest.drop_duplicates("study_id")["report"]) == simulate_reports(6, 2)
    info = json.loads((out / "simulation.json").read_text())
    assert info["videos_per_view"] == [1, 3] and info["view_missing"] == 0.3

    # training reads studies by study_id alone: the ground-truth view is not needed
    from echoclip.data.datasets import Manifest
    from echoclip.train.pairs import StudyPairs

    blind = manifest.drop(columns=["view", "video_index", "repeat"])
    blind.to_parquet(out / "blind.parquet", index=False)
    pairs = StudyPairs.from_table_dataset(Manifest(out / "blind.parquet"))
    assert sorted(map(len, pairs.groups)) == sorted(manifest.groupby("study_id").size())

    # the draws come from each study's seed: worker processes change nothing
    again = simulate_dataset(
        tmp_path / "again", videos_per_view=(1, 3), view_missing=0.3, workers=2, **options
    )
    pd.testing.assert_frame_equal(manifest, pd.read_parquet(again / "manifest.parquet"))


def test_the_default_data_set_is_one_video_per_view_without_new_columns(tmp_path) -> None:
    options = dict(n=3, seed=5, size=32, frames=16, fps=25.0, views=("A4C", "PLAX"), progress=False)
    plain = simulate_dataset(tmp_path / "plain", **options)
    manifest = pd.read_parquet(plain / "manifest.parquet")
    assert len(manifest) == 6 and "video_index" not in manifest and "repeat" not in manifest
    assert [p.split("/")[-1] for p in manifest["video_path"]] == [
        f"{s}_{v}.avi" for s in manifest["study_id"].unique() for v in ("A4C", "PLAX")
    ]
    assert "videos_per_view" not in json.loads((plain / "simulation.json").read_text())
    # one acquisition per view asked for explicitly writes the same videos
    explicit = simulate_dataset(tmp_path / "explicit", videos_per_view=(1, 1), **options)
    for path in manifest["video_path"]:
        assert (plain / path).read_bytes() == (explicit / path).read_bytes()
