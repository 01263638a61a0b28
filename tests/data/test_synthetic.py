"""The echo simulator: determinism, physical consistency, devices, overlays, reports, files."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

import echoclip
from echoclip.data.synthetic import (
    DEVICE_VIEWS,
    DEVICES,
    FINDINGS,
    VIEWS,
    CardiacState,
    Patient,
    cardiac_state,
    device_region,
    ef_consistent,
    ef_from_masks,
    extract_ef,
    make_patient,
    mentioned_devices,
    mentioned_findings,
    plan_cohort,
    report_sentences,
    sector_for,
    simulate_dataset,
    simulate_reports,
    simulate_study,
    write_report,
)
from echoclip.data.synthetic.cohort import report_rng, study_state
from echoclip.data.synthetic.overlay import ECG_COLOR
from echoclip.data.synthetic.reports import report_ef
from echoclip.errors import DataError

SMALL = {"size": 112, "frames": 32, "fps": 25.0}


# ---------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_identical_frames_and_report() -> None:
    a = simulate_study(11, view="A4C", **SMALL)
    b = simulate_study(11, view="A4C", **SMALL)
    assert a.video.frames.tobytes() == b.video.frames.tobytes()
    assert a.report == b.report
    assert a.truth.ef == b.truth.ef and a.truth.ed_frame == b.truth.ed_frame


def test_different_seeds_differ() -> None:
    a = simulate_study(11, **SMALL)
    b = simulate_study(12, **SMALL)
    assert not np.array_equal(a.video.frames, b.video.frames)
    assert a.report != b.report
    assert a.truth.study_id != b.truth.study_id


def test_video_shape_and_meta() -> None:
    study = simulate_study(3, size=96, frames=20, fps=25.0, view="PLAX")
    assert study.video.frames.shape == (20, 96, 96, 3)
    assert study.video.frames.dtype == np.uint8
    assert study.video.fps == 25.0
    assert study.video.meta["view"] == "PLAX"
    assert study.truth.lv_mask_ed.shape == (96, 96)


# ---------------------------------------------------------------------------------------
# physical consistency


@pytest.mark.parametrize("view", VIEWS)
def test_ef_from_lv_masks_matches_label(view: str) -> None:
    for seed in range(8):
        truth = simulate_study(seed, view=view, **SMALL).truth
        assert truth.lv_volumes[truth.ed_frame] == pytest.approx(truth.edv)
        assert truth.lv_volumes[truth.es_frame] == pytest.approx(truth.esv)
        measured = ef_from_masks(truth.lv_mask_ed, truth.lv_mask_es, view)
        assert abs(measured - truth.ef) <= 2.0, (seed, view, measured, truth.ef)


def test_ef_from_volume_tracings_matches_label() -> None:
    """The EchoNet-Dynamic tracings give the labelled EF by the method of discs."""
    truth = simulate_study(4, view="A4C", **SMALL).truth
    volumes = {}
    for frame in (truth.ed_frame, truth.es_frame):
        rows = np.array([r[:4] for r in truth.tracings if r[4] == frame])
        axis, chords = rows[0], rows[1:]
        length = math.hypot(axis[2] - axis[0], axis[3] - axis[1])
        widths = np.hypot(chords[:, 2] - chords[:, 0], chords[:, 3] - chords[:, 1])
        volumes[frame] = float(np.sum(math.pi / 4 * widths**2) * length / len(chords))
    ef = 100 * (1 - volumes[truth.es_frame] / volumes[truth.ed_frame])
    assert abs(ef - truth.ef) <= 2.0


def _period(signal: np.ndarray) -> float:
    """Period (frames) of a roughly periodic signal: the autocorrelation's first peak."""
    x = signal - signal.mean()
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    ac /= ac[0]
    first_negative = int(np.argmax(ac < 0))
    lag = first_negative + int(np.argmax(ac[first_negative : 2 * len(x) // 3]))
    y0, y1, y2 = ac[lag - 1], ac[lag], ac[lag + 1]
    return lag + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_lv_area_curve_period_matches_heart_rate(seed: int) -> None:
    fps = 30.0
    study = simulate_study(seed, size=64, frames=96, fps=fps, view="A4C")
    gray = study.video.frames[..., 0].astype(np.float32)
    # dark (blood) pixels inside the end-diastolic cavity: fewer as the LV contracts
    cavity = gray[:, study.truth.lv_mask_ed] < 40
    area = cavity.sum(axis=1).astype(np.float64)
    expected = fps * 60.0 / study.truth.heart_rate
    assert abs(_period(area) - expected) <= 0.05 * expected
    assert area[study.truth.ed_frame] > area[study.truth.es_frame]


def test_patient_anatomy_is_stable_and_devices_accumulate() -> None:
    patient = next(
        make_patient(s) for s in range(500) if any(v > 0 for v in make_patient(s).device_onset.values())
    )
    states = [cardiac_state(patient, visit, 1000 + visit) for visit in range(6)]
    assert len({s.patient_id for s in states}) == 1
    assert len({s.study_id for s in states}) == 6
    assert len({(s.lv_shape, s.wall_cm, s.sex, s.rv_scale) for s in states}) == 1
    late = {d for d, v in patient.device_onset.items() if v > 0}
    for visit, state in enumerate(states):
        persistent = set(state.devices) - {"impella"}
        assert persistent == {d for d, v in patient.device_onset.items() if v <= visit}
    assert late <= set(states[-1].devices)


# ---------------------------------------------------------------------------------------
# devices, findings, overlays


def _surgical_seed(position: str) -> int:
    return next(s for s in range(100) if make_patient(s).surgical_position == position)


@pytest.mark.parametrize("device", DEVICES)
def test_each_device_brightens_its_expected_region(device: str) -> None:
    seeds = [_surgical_seed("mitral"), _surgical_seed("aortic")] if device == "surgical_valve" else [21]
    for seed in seeds:
        for view in VIEWS:
            without = simulate_study(seed, view=view, devices=(), size=112, frames=16, fps=25.0)
            with_device = simulate_study(seed, view=view, devices=(device,), size=112, frames=16, fps=25.0)
            if device not in with_device.truth.visible_devices:
                assert np.array_equal(without.video.frames, with_device.video.frames), (device, view)
                continue
            assert view in DEVICE_VIEWS[device]
            f = with_device.truth.ed_frame
            delta = with_device.video.frames[f, ..., 0].astype(int) - without.video.frames[f, ..., 0].astype(
                int
            )
            brighter = delta > 40
            region = device_region(
                with_device.truth.regions, device, with_device.truth.state.surgical_position
            )
            region = _dilate(region, 2)
            assert brighter.sum() >= 6, (device, view, int(brighter.sum()))
            assert (brighter & region).sum() >= 0.9 * brighter.sum(), (device, view)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(pixels):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def test_findings_change_the_anatomy() -> None:
    states = [study_state(p) for p in plan_cohort(400, 3)]
    dilated = [s for s in states if "lv_dilation" in s.findings]
    normal = [s for s in states if "lv_dilation" not in s.findings]
    assert np.mean([s.edv for s in dilated]) > 1.3 * np.mean([s.edv for s in normal])
    thick = [s.wall_cm for s in states if "lv_hypertrophy" in s.findings]
    thin = [s.wall_cm for s in states if "lv_hypertrophy" not in s.findings]
    assert min(thick) > max(thin)
    assert all(s.effusion_cm > 0 for s in states if "pericardial_effusion" in s.findings)
    assert all(s.effusion_cm == 0 for s in states if "pericardial_effusion" not in s.findings)
    for finding in FINDINGS:
        assert any(finding in s.findings for s in states), finding


def test_pericardial_effusion_is_a_dark_rim() -> None:
    from dataclasses import replace

    from echoclip.data.synthetic.study import render_study

    state = cardiac_state(make_patient(2), 0, 2)
    dry = render_study(replace(state, effusion_cm=0.0), "", 2, "PLAX", 112, 16, 25.0).video.frames
    wet = render_study(replace(state, effusion_cm=1.5), "", 2, "PLAX", 112, 16, 25.0).video.frames
    darker = (dry[0, ..., 0].astype(int) - wet[0, ..., 0].astype(int)) > 30
    assert darker.sum() > 100


@pytest.mark.parametrize("size", [64, 112, 160])
def test_ecg_and_labels_lie_outside_the_sector(size: int) -> None:
    study = simulate_study(7, size=size, frames=12, fps=25.0, view="A4C")
    frames = study.video.frames
    sector = sector_for(size).mask()
    assert np.array_equal(sector, study.truth.sector_mask)
    colored = (frames[..., 0] != frames[..., 1]) | (frames[..., 1] != frames[..., 2])
    ecg = np.all(frames == np.array(ECG_COLOR, dtype=np.uint8), axis=-1)
    assert ecg.any(axis=(1, 2)).all()  # every frame has its trace
    assert not (colored & sector).any()  # the fan is grey, the overlays are outside it
    overlay = frames.max(axis=-1) > 0
    assert (overlay & ~sector).any()


# ---------------------------------------------------------------------------------------
# reports


@pytest.fixture(scope="module")
def cohort_1000() -> list[tuple[CardiacState, str, list[list[tuple[str, str]]]]]:
    """1,000 studies of one cohort: state, report, and the report's sentences by topic."""
    patients: dict[int, Patient] = {}
    out = []
    for plan in plan_cohort(1000, 0):
        state = study_state(plan, patients)
        report = write_report(state, report_rng(plan.study_seed))
        out.append((state, report, report_sentences(state, report_rng(plan.study_seed))))
    return out


def test_reports_state_a_consistent_ef_and_exactly_the_present_devices(cohort_1000) -> None:
    assert [r for _, r, _ in cohort_1000[:50]] == simulate_reports(50, 0)
    counts: dict[str, int] = defaultdict(int)
    for state, report, _ in cohort_1000:
        assert ef_consistent(report, state.ef), (state.ef, extract_ef(report), report)
        assert mentioned_devices(report) == set(state.devices), (state.devices, report)
        assert mentioned_findings(report) == set(state.findings), (state.findings, report)
        for d in state.devices:
            counts[d] += 1
    assert all(counts[d] >= 20 for d in DEVICES), counts  # every device is common enough to learn
    study = simulate_study(5, **SMALL)
    assert ef_consistent(study.report, study.truth.ef)
    assert mentioned_devices(study.report) == set(study.truth.devices)


def test_report_variety_over_1000_reports(cohort_1000) -> None:
    phrasings: dict[str, set[str]] = defaultdict(set)
    words: set[str] = set()
    ef_styles: set[str] = set()
    for _, report, sections in cohort_1000:
        words |= set(re.findall(r"[a-z]+", report.lower()))
        for section in sections:
            for topic, sentence in section:
                phrasings[topic].add(re.sub(r"\d+(\.\d+)?", "#", sentence.lower()))
                if topic == "ef":
                    ef_styles |= _ef_styles(sentence)
    for finding in FINDINGS:
        assert len(phrasings[finding]) >= 5, (finding, phrasings[finding])
        assert len(phrasings[f"no_{finding}"]) >= 3, finding
    for device in DEVICES:
        assert len(phrasings[device]) >= 5, device
    assert len(words) >= 300
    assert len(ef_styles) >= 3, ef_styles
    assert {"mild", "moderate", "severe"} <= words
    assert any(r.isupper() for _, r, _ in cohort_1000) and any(not r.isupper() for _, r, _ in cohort_1000)


def _ef_styles(sentence: str) -> set[str]:
    styles = {
        "range": r"\d+\s*%?\s*(-|to)\s*\d+\s*%",
        "percent": r"(?<![-\d])\d+%",
        "spaced percent": r"\d+ %",
        "percent word": r"\d+ percent",
        "fraction": r"\b0\.\d\d\b",
        "bound": r"(<|>|less than|greater than)\s*\d+%",
    }
    return {name for name, pattern in styles.items() if re.search(pattern, sentence)}


def test_extract_ef_reads_the_usual_styles() -> None:
    assert extract_ef("LVEF 55%.") == [(55.0, 55.0)]
    assert extract_ef("EF: 50 - 55 %.") == [(50.0, 55.0)]
    assert extract_ef("Ejection fraction is estimated at 35 to 40%.") == [(35.0, 40.0)]
    assert extract_ef("The LV ejection fraction is 60 percent.") == [(60.0, 60.0)]
    assert extract_ef("EF 0.45.") == [(45.0, 45.0)]
    assert extract_ef("LVEF >70%.") == [(70.0, 100.0)]
    assert extract_ef("LVEF less than 20%.") == [(0.0, 20.0)]
    assert extract_ef("EF has improved since the prior study. HR 72 bpm.") == []
    assert report_ef("EF: 50 - 55 %. In summary: LVEF 52%.") == 52.5  # the first statement
    assert report_ef("LVEF >70%.") == 70.0 and report_ef("LVEF less than 20%.") == 20.0
    assert report_ef("EF has improved since the prior study.") is None


def test_mentioned_findings_read_sentences_not_headings_or_denials() -> None:
    assert mentioned_findings("RIGHT VENTRICLE / ATRIA: The right atrium is mildly dilated.") == set()
    assert mentioned_findings("RV: moderately dilated with reduced systolic function.") == {"rv_dilation"}
    assert (
        mentioned_findings("No LVH. Left atrium is not enlarged. No significant pericardial effusion.")
        == set()
    )
    assert mentioned_findings(
        "Small pericardial effusion with no echocardiographic signs of tamponade physiology. Mild LVH."
    ) == {"pericardial_effusion", "lv_hypertrophy"}
    assert not ef_consistent("Normal LV size.", 60.0)
    assert not ef_consistent("LVEF 45%.", 60.0)


def test_no_report_mentions_identifying_data() -> None:
    for report in simulate_reports(300, 2):
        assert not re.search(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b", report)  # dates
        assert not re.search(r"\b(Mr|Mrs|Ms|Dr)\.? [A-Z][a-z]", report)  # names
        assert not re.search(r"\bP[0-9a-f]{12}\b|\bS[0-9a-f]{12}\b", report)  # ids


# ---------------------------------------------------------------------------------------
# bad input


def test_bad_arguments_raise_data_errors() -> None:
    with pytest.raises(DataError, match="unknown view"):
        simulate_study(0, view="A5C")
    with pytest.raises(DataError, match="at least 1"):
        simulate_reports(0, 0)
    with pytest.raises(DataError, match="cannot hold a systole"):
        simulate_study(0, frames=3, fps=50.0)
    with pytest.raises(DataError, match="unknown devices"):
        simulate_study(0, devices=("lvad",))


# ---------------------------------------------------------------------------------------
# the written data set


def test_simulate_dataset_writes_a_consistent_echonet_folder(tmp_path) -> None:
    out = simulate_dataset(
        tmp_path / "sim", n=4, seed=5, size=64, frames=16, fps=25.0, views=("A4C", "PLAX"), progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]  # no temp folder left behind
    files = pd.read_csv(out / "FileList.csv")
    tracings = pd.read_csv(out / "VolumeTracings.csv")
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(files.columns) == [
        "FileName",
        "EF",
        "ESV",
        "EDV",
        "FrameHeight",
        "FrameWidth",
        "FPS",
        "NumberOfFrames",
        "Split",
    ]
    assert list(tracings.columns) == ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
    assert len(files) == len(manifest) == 8
    assert set(files["Split"]) <= {"TRAIN", "VAL", "TEST"}
    assert manifest["study_id"].nunique() == 4
    for column in [
        "video_path",
        "report",
        "patient_id",
        "study_id",
        "view",
        "ef",
        "edv",
        "esv",
        "heart_rate",
        "fps",
        "split",
    ]:
        assert column in manifest
    for name in DEVICES:
        assert manifest[f"device_{name}"].dtype == bool
    for name in FINDINGS:
        assert manifest[f"finding_{name}"].dtype == bool
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1  # split by patient
    assert manifest.groupby("study_id")["report"].nunique().max() == 1  # one report per study
    assert list(manifest.drop_duplicates("study_id")["report"]) == simulate_reports(4, 5)
    assert np.allclose(files["EF"], manifest["ef"].round(2))
    assert list(files["FileName"] + ".avi") == [p.split("/")[-1] for p in manifest["video_path"]]
    assert set(tracings["FileName"]) <= set(files["FileName"] + ".avi")
    for (name, frame), rows in tracings.groupby(["FileName", "Frame"]):
        assert len(rows) == 21  # the long axis, then 20 chords
        row = manifest[manifest["video_path"] == f"Videos/{name}"].iloc[0]
        assert frame in (row["ed_frame"], row["es_frame"])
    assert json.loads((out / "simulation.json").read_text())["n"] == 4

    first = manifest.iloc[0]
    video = echoclip.load_video(out / first["video_path"])
    assert video.frames.shape == (16, 64, 64, 3)
    assert video.fps == pytest.approx(25.0)
    plan = plan_cohort(4, 5)[0]
    again = simulate_study(
        plan.study_seed,
        size=64,
        frames=16,
        fps=25.0,
        view=first["view"],
        patient=plan.patient_seed,
        visit=plan.visit,
    )
    assert np.abs(video.frames.astype(int) - again.video.frames.astype(int)).mean() < 8
    assert again.report == first["report"]

    with pytest.raises(DataError, match="already exists"):
        simulate_dataset(out, n=1, seed=0, size=64, frames=16, fps=25.0, progress=False)
    simulate_dataset(out, n=1, seed=0, size=64, frames=16, fps=25.0, progress=False, overwrite=True)
    assert len(pd.read_csv(out / "FileList.csv")) == 1


def test_simulate_dataset_is_the_same_with_worker_processes(tmp_path) -> None:
    options = dict(n=6, seed=3, size=32, frames=32, fps=25.0, views=("A4C", "PLAX"), progress=False)
    serial = simulate_dataset(tmp_path / "serial", **options)
    parallel = simulate_dataset(tmp_path / "parallel", workers=2, **options)
    pd.testing.assert_frame_equal(
        pd.read_parquet(serial / "manifest.parquet"), pd.read_parquet(parallel / "manifest.parquet")
    )
    for name in ("FileList.csv", "VolumeTracings.csv"):
        assert (serial / name).read_text() == (parallel / name).read_text()
    for path in pd.read_parquet(serial / "manifest.parquet")["video_path"]:
        assert np.array_equal(
            echoclip.load_video(serial / path).frames, echoclip.load_video(parallel / path).frames
        )
