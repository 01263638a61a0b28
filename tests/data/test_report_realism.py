"""Report realism: a fallible reader's EF, untidy writing, and facts that stay readable."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from echoclip.data.synthetic import (
    CardiacState,
    Patient,
    WrittenReport,
    compose_report,
    extract_ef,
    finding_concept,
    mentioned_devices,
    mentioned_findings,
    plan_cohort,
    simulate_dataset,
    simulate_reports,
    simulate_study,
    stated_ef,
    write_report,
)
from echoclip.data.synthetic.anatomy import FINDINGS
from echoclip.data.synthetic.cohort import report_rng, study_state
from echoclip.data.synthetic.realism import Realism, ReportRealism, get_realism

REAL = get_realism("real").report

# sha256 of the reports joined by NUL, as written before report realism existed: the
# clean preset must keep them byte for byte (the demo's published figures rest on them)
CLEAN_BEFORE = {
    (50, 0): "b2b4bd06ec4af276aa2959434248acfcd9ee69e651e70aa2b748bd58cc11782d",
    (500, 1): "64834360f96e86c33f1093888991f207ecbb06a7fa87cf04a4c08fdad4d628e1",
}


def _digest(reports: list[str]) -> str:
    return hashlib.sha256("\x00".join(reports).encode()).hexdigest()


def _cohort(n: int, seed: int) -> list[tuple[CardiacState, int]]:
    patients: dict[int, Patient] = {}
    return [(study_state(plan, patients), plan.study_seed) for plan in plan_cohort(n, seed)]


def _write(cohort: list[tuple[CardiacState, int]], realism: ReportRealism | None) -> list[WrittenReport]:
    return [compose_report(state, report_rng(seed), realism) for state, seed in cohort]


@pytest.fixture(scope="module")
def cohort() -> list[tuple[CardiacState, int]]:
    return _cohort(1000, 0)


@pytest.fixture(scope="module")
def real_1000(cohort) -> list[WrittenReport]:
    return _write(cohort, REAL)


# ---------------------------------------------------------------------------------------
# clean is today's simulator


@pytest.mark.parametrize(("n", "seed"), sorted(CLEAN_BEFORE))
def test_clean_reports_are_byte_for_byte_those_of_before(n: int, seed: int) -> None:
    reports = simulate_reports(n, seed)
    assert _digest(reports) == CLEAN_BEFORE[n, seed]
    assert simulate_reports(n, seed, realism="clean") == reports
    assert simulate_reports(n, seed, realism=Realism("zeros")) == reports  # every knob at zero is clean


def test_clean_reports_state_the_true_ef(cohort) -> None:
    for (state, seed), written in zip(cohort[:200], _write(cohort[:200], None), strict=True):
        assert written.stated_ef == round(state.ef) == stated_ef(state, None, 0)
        assert written.text == write_report(state, report_rng(seed))
        assert all(lo <= written.stated_ef <= hi for lo, hi in extract_ef(written.text))


# ---------------------------------------------------------------------------------------
# the stated EF


def test_observer_error_has_the_documented_sd(cohort, real_1000) -> None:
    errors = np.array(
        [w.stated_ef - s.ef for (s, _), w in zip(cohort, real_1000, strict=True) if w.stated_ef]
    )
    assert len(errors) > 800
    assert abs(errors.mean()) < 0.5
    assert errors.std() == pytest.approx(REAL.observer_sd, rel=0.1)
    wide = _write(cohort, ReportRealism(observer_sd=8.0))
    errors = np.array([w.stated_ef - s.ef for (s, _), w in zip(cohort, wide, strict=True)])
    assert abs(errors.mean()) < 0.8
    assert errors.std() == pytest.approx(8.0, rel=0.1)
    assert all(5 <= w.stated_ef <= 85 and w.stated_ef == int(w.stated_ef) for w in wide)


def test_stated_ef_is_what_compose_report_states(cohort) -> None:
    for state, seed in cohort[:100]:
        child = report_rng(seed).spawn(1)[0]
        assert stated_ef(state, REAL, child) == compose_report(state, report_rng(seed), REAL).stated_ef


def test_a_missing_ef_is_missing_from_the_text(real_1000) -> None:
    missing = [w for w in real_1000 if w.stated_ef is None]
    assert len(missing) / len(real_1000) == pytest.approx(REAL.ef_missing, abs=0.03)
    for w in missing:
        assert extract_ef(w.text) == [], w.text
        assert "systolic function" in w.text.lower()  # the function is graded, not quantified


def test_every_ef_the_report_states_holds_the_stated_ef(real_1000) -> None:
    widths = set()
    for w in real_1000:
        if w.stated_ef is None:
            continue
        found = extract_ef(w.text)
        assert found and all(lo <= w.stated_ef <= hi and hi - lo <= 5 for lo, hi in found), (
            w.stated_ef,
            w.text,
        )
        widths |= {hi - lo for lo, hi in found}
    assert widths == {0.0, 5.0}


def test_ranges_and_visual_estimates(cohort) -> None:
    ranged = _write(cohort[:300], ReportRealism(observer_sd=4.0, ef_range=1.0))
    for w in ranged:
        found = extract_ef(w.text)
        assert found and all(hi - lo == 5 and lo % 5 == 0 and lo <= w.stated_ef <= hi for lo, hi in found)
    visual = _write(cohort[:300], ReportRealism(observer_sd=4.0, ef_visual=1.0))
    for w in visual:
        assert w.stated_ef % 5 == 0 and "visual" in w.text.lower()
        assert set(extract_ef(w.text)) == {(w.stated_ef, w.stated_ef)}, w.text
    rounded = _write(cohort[:300], ReportRealism(observer_sd=4.0, ef_round5=1.0))
    assert all(w.stated_ef % 5 == 0 for w in rounded)


def test_extract_ef_reads_the_fallible_readers_wordings() -> None:
    cases = {
        "LVEF visually estimated at 55%.": [(55.0, 55.0)],
        "The ejection fraction is visually estimated at about 40%.": [(40.0, 40.0)],
        "By visual estimation, the LVEF is approximately 35%.": [(35.0, 35.0)],
        "Visually estimated LVEF: 60%.": [(60.0, 60.0)],
        "EF: 45%-50%.": [(45.0, 50.0)],
        "The LV EF is probably 50 - 55 %.": [(50.0, 55.0)],
        "Suboptimal views limit assessment of LV function; the LV ejection fraction is 45%.": [(45.0, 45.0)],
        "Nl LV systolic function w/ an estimated EF of 60%.": [(60.0, 60.0)],
        "LV systolic function appears mildly reduced.": [],
        "Since the prior echo, the ejection fraction has decreased. RVSP 35 mmHg.": [],
    }
    for text, expected in cases.items():
        assert extract_ef(text) == expected, text


# ---------------------------------------------------------------------------------------
# untidy writing keeps every fact


def test_devices_and_findings_stay_findable(cohort, real_1000) -> None:
    for (state, _), w in zip(cohort, real_1000, strict=True):
        assert mentioned_devices(w.text) == set(state.devices), (state.devices, w.text)
        assert mentioned_findings(w.text) == set(state.findings), (state.findings, w.text)
    # every sentence abbreviated, mistyped and hedged, and a table in every report
    messy = ReportRealism(observer_sd=4.0, abbreviation=1.0, typo=1.0, hedge=1.0, table=1.0)
    for (state, _), w in zip(cohort[:300], _write(cohort[:300], messy), strict=True):
        assert mentioned_devices(w.text) == set(state.devices), (state.devices, w.text)
        assert mentioned_findings(w.text) == set(state.findings), (state.findings, w.text)
        found = extract_ef(w.text)
        assert found and all(lo <= w.stated_ef <= hi for lo, hi in found), (w.stated_ef, w.text)


def test_findings_are_read_from_clean_reports_too(cohort) -> None:
    for (state, _), w in zip(cohort, _write(cohort, None), strict=True):
        assert mentioned_findings(w.text) == set(state.findings), (state.findings, w.text)


def test_a_finding_concept_matches_the_sentences_that_state_the_finding(cohort, real_1000) -> None:
    from echoclip.train.contrastive import ConceptMatcher, split_sentences

    matcher = ConceptMatcher({f: finding_concept(f) for f in FINDINGS})
    sentences = [t for w in real_1000[:300] for t in split_sentences(w.text)]
    named = matcher.sentences(sentences).numpy()
    read = np.array([[f in mentioned_findings(t) for f in FINDINGS] for t in sentences])
    assert (named == read).all()
    assert read.sum(axis=0).min() >= 5  # every finding is stated somewhere, in several sentences
    denied = ["No pericardial effusion.", "The left ventricle is normal in size.", "RV size is normal."]
    assert not matcher.sentences(denied).any()
    assert matcher.sentences(["The left ventricle is severely dilated."]).numpy().tolist() == [
        [f == "lv_dilation" for f in FINDINGS]
    ]


def test_real_reports_are_untidy(cohort, real_1000) -> None:
    clean = [w.text for w in _write(cohort, None)]
    real = [w.text for w in real_1000]
    clean_words = {word for text in clean for word in re.findall(r"[a-z]+", text.lower())}
    new_words = {word for text in real for word in re.findall(r"[a-z]+", text.lower())} - clean_words
    assert len(new_words) >= 20  # typos (and a few new wordings)
    share = {
        "abbreviation": r"\bw/|\bc/w\b|\bnl\b|\bmod\b|\bsev\b",
        "hedge": r"probably|likely|cannot be excluded|cannot exclude|limit assessment|limited views|no definite",
        "table": r"(?m)^(?:LVIDd|IVSd|LVIDs|LVPWd|TAPSE|RVSP|LA vol index|Ao root)\b",
    }
    for name, pattern in share.items():
        hits = np.mean([bool(re.search(pattern, t, re.I)) for t in real])
        assert 0.15 < hits < 0.9, (name, hits)
    assert np.mean([a != b for a, b in zip(clean, real, strict=True)]) > 0.95


def test_the_same_seed_gives_the_same_report(cohort) -> None:
    state, seed = cohort[3]
    a = compose_report(state, report_rng(seed), REAL)
    assert a == compose_report(state, report_rng(seed), REAL)
    assert a != compose_report(state, report_rng(seed + 1), REAL)
    assert simulate_reports(40, 2, realism="real") == simulate_reports(40, 2, realism=get_realism("real"))
    assert simulate_reports(40, 2, realism="real") != simulate_reports(40, 2)


# ---------------------------------------------------------------------------------------
# the data set and the study


def test_manifest_records_the_reported_ef_beside_the_true_one(tmp_path) -> None:
    options = dict(n=8, seed=4, size=32, frames=16, fps=25.0, progress=False)
    half = Realism("half-missing", report=ReportRealism(observer_sd=4.0, ef_range=0.5, ef_missing=0.4))
    out = simulate_dataset(tmp_path / "real", realism=half, **options)
    clean = pd.read_parquet(simulate_dataset(tmp_path / "clean", **options) / "manifest.parquet")
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert json.loads((out / "simulation.json").read_text())["realism"] == "half-missing"
    assert json.loads((tmp_path / "clean" / "simulation.json").read_text())["realism"] == "clean"
    assert manifest["reported_ef"].dtype == float
    assert list(manifest["ef"]) == list(clean["ef"])  # the truth does not change
    assert list(clean["reported_ef"]) == [round(ef) for ef in clean["ef"]]
    assert manifest["reported_ef"].isna().any() and manifest["reported_ef"].notna().any()
    for _, row in manifest.iterrows():
        found = extract_ef(row["report"])
        if np.isnan(row["reported_ef"]):
            assert found == []
        else:
            assert found and all(lo <= row["reported_ef"] <= hi and hi - lo <= 5 for lo, hi in found)
    assert list(manifest["report"]) == simulate_reports(8, 4, realism=half)


def test_a_study_records_the_ef_its_report_states() -> None:
    for seed in range(10):
        study = simulate_study(seed, size=32, frames=16, fps=25.0, realism="real")
        found = extract_ef(study.report)
        if study.truth.reported_ef is None:
            assert found == []
        else:
            assert found and all(lo <= study.truth.reported_ef <= hi for lo, hi in found)
        clean = simulate_study(seed, size=32, frames=16, fps=25.0)
        assert clean.truth.reported_ef == round(clean.truth.ef) and clean.truth.ef == study.truth.ef
