"""``echoclip ingest`` on a simulated hospital export: every file accounted for, nothing identifying out."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from echoclip.cli.main import main
from echoclip.data.ingest import IngestConfig, classify_instance, ingest, salted_id, sr_measurements
from echoclip.data.synthetic import simulate_archive

SALT = "test-salt"
CINES = ("bmode_cine", "color_cine")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "export"
    return simulate_archive(out, n=20, seed=3, size=48, frames=16, fps=25.0)


@pytest.fixture(scope="module")
def truth(archive) -> pd.DataFrame:
    table = pd.read_csv(archive / "truth.csv", dtype={"accession": str, "birth_date": str})
    reported = set(pd.read_csv(archive / "reports.csv", dtype=str)["accession_number"])
    table["reported"] = table["accession"].isin(reported)
    table["key"] = [salted_id(SALT, "path", p) for p in table["path"]]
    return table


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ingest") / "out"
    result = ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, progress=False))
    assert result.complete
    return out


def _expected_videos(truth: pd.DataFrame) -> set[str]:
    kept = truth[truth["kind"].isin(CINES) & truth["reported"] & truth["keep"].astype(bool)]
    return {
        f"videos/{salted_id(SALT, 'study', s)}/{salted_id(SALT, 'instance', u)}.avi"
        for s, u in zip(kept["study_uid"], kept["sop_uid"], strict=True)
    }


def test_every_cine_of_a_reported_study_is_in_the_manifest_once(reference, truth):
    manifest = pd.read_parquet(reference / "manifest.parquet")
    assert manifest["video_path"].is_unique
    assert set(manifest["video_path"]) == _expected_videos(truth)
    assert all((reference / p).is_file() for p in manifest["video_path"])
    assert set(manifest["kind"]) == {"bmode", "color"} and set(manifest["view"]) == {"unknown"}
    assert manifest["cm_per_px"].gt(0).all() and manifest["fps"].eq(25.0).all()
    assert manifest["report"].str.len().gt(0).all()
    assert set(manifest["split"]) <= {"train", "val", "test"}
    # a patient's studies share one split
    assert manifest.groupby("patient_id")["split"].nunique().eq(1).all()


def test_every_other_file_is_reported_with_its_reason(reference, truth):
    report = pd.read_csv(reference / "ingest_report.csv", dtype=str)
    used = truth["reported"] & truth["keep"].astype(bool) & truth["kind"].isin((*CINES, "sr"))
    assert set(report["key"]) == set(truth.loc[~used, "key"])
    assert report["key"].is_unique
    reasons = dict(zip(report["key"], report["reason"], strict=True))
    for row in truth[~used].itertuples():
        reason = reasons[row.key]
        if row.kind == "junk":
            assert "DICOM" in reason, (row.path, reason)
        elif not row.reported:
            assert reason == "no report for this study in the reports table"
        else:
            expected = {
                "still": "still",
                "spectral_doppler": "spectral Doppler",
                "secondary_capture": "secondary capture",
                "truncated": "truncated",
            }[row.kind]
            assert expected in reason, (row.kind, reason)
    # paths are relative to the root, with the patient's folder and accession number replaced
    assert not any(p.startswith("/") for p in report["file"])
    assert any(p.startswith("[patient]") and "[study]" in p for p in report["file"])


def test_the_sr_measurements_are_the_manifest_columns(reference, truth):
    manifest = pd.read_parquet(reference / "manifest.parquet")
    per_study = truth[truth["kind"] == "sr"].set_index(
        truth.loc[truth["kind"] == "sr", "study_uid"].map(lambda u: salted_id(SALT, "study", u))
    )
    for row in manifest.itertuples():
        expected = per_study.loc[row.study_id]
        assert row.ef == pytest.approx(expected["ef"], abs=0.006)
        assert row.lvidd_cm == pytest.approx(expected["lvidd"], abs=0.001)  # written in mm
        assert row.ivsd_cm == pytest.approx(expected["wall_cm"], abs=0.001)
        assert row.edv == pytest.approx(expected["edv"], abs=0.006)
        assert math.isnan(row.lvpwd_cm)  # not measured: NaN, not zero


def _identifiers(truth: pd.DataFrame) -> list[str]:
    """The identifying strings of the export (names, ids, accession numbers, burnt-in text, dates, UIDs)."""
    columns = ["patient_id", "accession", "burnt_in", "birth_date", "study_uid", "sop_uid"]
    values = {v for c in columns for v in truth[c].dropna().astype(str) if v}
    for name in truth["patient_name"].dropna():
        values |= {name, *name.split("^")}
    return sorted(values | {"ZQX GENERAL HOSPITAL", "20240102"})


def _leaks(folder: Path, identifiers: list[str]) -> list[str]:
    """Identifiers in any file; text files must not hold even their common prefix ZQX."""
    found = []
    for file in folder.rglob("*"):
        if not file.is_file():
            continue
        data = file.read_bytes().lower()
        wanted = identifiers + (["ZQX"] if file.suffix in (".csv", ".json", ".txt", "") else [])
        found += [f"{file.name}: {s}" for s in wanted if s.lower().encode() in data]
    for table in folder.glob("*.parquet"):
        text = pd.read_parquet(table).astype(str).to_csv().lower()
        found += [f"{table.name}: {s}" for s in identifiers if s.lower() in text]
    return found


def test_no_identifier_in_any_output_log_or_message(archive, truth, reference, tmp_path, capsys, caplog):
    assert _leaks(reference, _identifiers(truth)) == []
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "cli"
    args = ["ingest", str(archive / "dicom"), "--reports", str(archive / "reports.csv"), "--out", str(out)]
    assert main([*args, "--workers", "2", "--salt", SALT]) == 0
    captured = capsys.readouterr()
    text = (captured.out + captured.err + caplog.text).lower()
    assert [s for s in [*_identifiers(truth), "ZQX"] if s.lower() in text] == []
    assert captured.out.startswith("ingested ") and "reports match no study" in captured.out
    assert _leaks(out, _identifiers(truth)) == []
    # --workers 2 writes the same manifest and report as --workers 1
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(reference / "manifest.parquet")
    )
    assert (out / "ingest_report.csv").read_text() == (reference / "ingest_report.csv").read_text()


def test_a_run_stopped_early_resumes_to_the_same_manifest(archive, reference, tmp_path):
    out = tmp_path / "out"
    first = ingest(
        archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, limit=5, progress=False)
    )
    assert not first.complete and first.studies_done == 5 and not (out / "manifest.parquet").exists()
    assert len(list((out / "studies").glob("*.json"))) == 5
    second = ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, progress=False))
    assert second.complete
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(reference / "manifest.parquet")
    )
    with pytest.raises(ValueError, match="another salt"):
        ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt="other", progress=False))


def test_a_crash_mid_run_resumes_each_study_once(archive, reference, tmp_path, monkeypatch):
    import echoclip.data.ingest as module

    real, calls = module._ingest_study, []

    def crash_after_three(job):
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(job.study_id)
        return real(job)

    out = tmp_path / "out"
    monkeypatch.setattr(module, "_ingest_study", crash_after_three)
    with pytest.raises(RuntimeError, match="killed"):
        ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, progress=False))
    monkeypatch.setattr(module, "_ingest_study", real)
    assert not list(out.rglob("*.tmp"))
    redone = []
    monkeypatch.setattr(module, "_ingest_study", lambda job: redone.append(job.study_id) or real(job))
    ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, progress=False))
    assert not set(redone) & set(calls)  # finished studies are not done again
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(reference / "manifest.parquet")
    )


def test_without_a_salt_one_is_kept_and_reused(archive, tmp_path):
    out = tmp_path / "out"
    ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(limit=2, progress=False))
    salt = (out / "salt").read_text().strip()
    ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(progress=False))
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest["video_path"].is_unique
    assert all(
        p.split("/")[1] == s for p, s in zip(manifest["video_path"], manifest["study_id"], strict=True)
    )
    assert salt != SALT and (out / "salt").read_text().strip() == salt


def test_training_runs_on_the_ingested_data(reference, tmp_path):
    from echoclip.data.synthetic import simulate_reports
    from echoclip.tokenizer import EchoTokenizer
    from echoclip.train.clip import train_clip
    from echoclip.train.config import TrainConfig

    config = TrainConfig(
        out=str(tmp_path / "clip"), steps=2, batch_size=4, warmup_steps=1, tensorboard=False, progress=False
    )
    train_clip(
        reference,
        config,
        model="echoclip-tiny",
        tokenizer=EchoTokenizer.train(simulate_reports(50, seed=1)),
        augment=False,
        val_split=None,
        zero_shot_prompts=None,
        ood=False,
    )
    assert (tmp_path / "clip" / "final" / "model.safetensors").is_file()


def test_bad_input_is_one_line_and_exit_1(archive, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert (
        main(["ingest", str(tmp_path / "nowhere"), "--reports", str(archive / "reports.csv"), "--out", out])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere: no such folder" in err
    bad = tmp_path / "reports.csv"
    pd.DataFrame({"acc": ["1"], "report": ["x"]}).to_csv(bad, index=False)
    assert main(["ingest", str(archive / "dicom"), "--reports", str(bad), "--out", out]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "no column 'accession_number'" in err and "--accession-column" in err
    )


def _dataset(**tags) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def _region(data_type: int, spatial: int = 1) -> pydicom.Dataset:
    return _dataset(RegionDataType=data_type, RegionSpatialFormat=spatial)


@pytest.mark.parametrize(
    ("tags", "kind"),
    [
        ({"Modality": "SR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.33"}, "sr"),
        ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7", "Rows": 8}, "secondary_capture"),
        (
            {"Modality": "US", "Rows": 8, "NumberOfFrames": 30, "SequenceOfUltrasoundRegions": [_region(1)]},
            "bmode_cine",
        ),
        (
            {
                "Modality": "US",
                "Rows": 8,
                "NumberOfFrames": 30,
                "SequenceOfUltrasoundRegions": [_region(1), _region(2)],
            },
            "color_cine",
        ),
        (
            {"Modality": "US", "Rows": 8, "SequenceOfUltrasoundRegions": [_region(1), _region(3, 3)]},
            "spectral_doppler",
        ),
        (
            {
                "Modality": "US",
                "Rows": 8,
                "NumberOfFrames": 40,
                "SequenceOfUltrasoundRegions": [_region(4, 3)],
            },
            "spectral_doppler",
        ),
        ({"Modality": "US", "Rows": 8, "NumberOfFrames": 1}, "still"),
        ({"Modality": "CT", "Rows": 8, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, "other"),
        ({"Modality": "US"}, "other"),  # no image
    ],
)
def test_classify_instance(tags, kind):
    assert classify_instance(_dataset(**tags)) == kind


def test_sr_measurements_convert_units_and_take_the_first_value():
    def num(code: str, value: str, unit: str) -> pydicom.Dataset:
        name = _dataset(CodeValue=code, CodingSchemeDesignator="LN", CodeMeaning=code)
        units = _dataset(CodeValue=unit, CodingSchemeDesignator="UCUM", CodeMeaning=unit)
        measured = _dataset(NumericValue=value, MeasurementUnitsCodeSequence=[units])
        return _dataset(ValueType="NUM", ConceptNameCodeSequence=[name], MeasuredValueSequence=[measured])

    inner = _dataset(
        ValueType="CONTAINER", ContentSequence=[num("10230-1", "0.42", "1"), num("29436-3", "52", "mm")]
    )
    ds = _dataset(ContentSequence=[inner, num("10230-1", "60", "%"), num("18026-2", "120", "mL")])
    assert sr_measurements(ds) == pytest.approx({"ef": 42.0, "lvidd_cm": 5.2, "edv": 120.0})


def test_a_dicomdir_names_the_files_to_read(archive, truth, tmp_path):
    from pydicom.fileset import FileSet

    broken = set(truth.loc[truth["kind"].eq("truncated"), "study_uid"])
    study = truth[truth["reported"] & truth["kind"].eq("sr") & ~truth["study_uid"].isin(broken)][
        "study_uid"
    ].iloc[0]
    members = truth[truth["study_uid"].eq(study)]
    fs = FileSet()
    for path in members["path"]:
        fs.add(archive / "dicom" / path)
    root = tmp_path / "cd"
    fs.write(root)  # PT000000/ST000000/SE00000k/IM000000, as a burnt CD lays it out
    (root / "EXTRA.dcm").write_bytes((archive / "dicom" / members["path"].iloc[0]).read_bytes())
    out = tmp_path / "out"
    result = ingest(root, archive / "reports.csv", out, IngestConfig(salt=SALT, progress=False))
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert result.complete and len(manifest) == members["kind"].isin(CINES).sum()
    report = pd.read_csv(out / "ingest_report.csv")
    assert "not listed in the DICOMDIR" in set(report.loc[report["file"] == "EXTRA.dcm", "reason"])
