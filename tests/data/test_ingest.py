"""``echoclip ingest`` on a simulated hospital export: every file accounted for, nothing identifying out.

Most tests run in both modes: kept cines converted to AVIs, and linked as their source DICOMs.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from echoclip.cli.main import main
from echoclip.data.ingest import IngestConfig, classify_instance, ingest, salted_id, sr_measurements
from echoclip.data.synthetic import simulate_archive

SALT = "test-salt"
CINES = ("bmode_cine", "color_cine")
MODES = ("convert", "link")
SUFFIX = {"convert": ".avi", "link": ".dcm"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "export"
    return simulate_archive(out, n=20, seed=3, size=48, frames=16, fps=25.0)


@pytest.fixture(scope="module")
def truth(archive) -> pd.DataFrame:
    return _truth(archive)


def _truth(archive: Path) -> pd.DataFrame:
    """The archive's truth table, with whether each file's study is reported and its key."""
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


@pytest.fixture(scope="module")
def linked(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ingest-link") / "out"
    config = IngestConfig(salt=SALT, progress=False, videos="link")
    result = ingest(archive / "dicom", archive / "reports.csv", out, config)
    assert result.complete and result.links == {"hard": result.videos}
    return out


def _ingested(request: pytest.FixtureRequest, mode: str) -> Path:
    """The module's ingest of the archive in ``mode``."""
    return request.getfixturevalue({"convert": "reference", "link": "linked"}[mode])


def _expected_videos(truth: pd.DataFrame, mode: str = "convert") -> dict[str, str]:
    """The manifest's video paths, each with its source file under ``dicom/``."""
    kept = truth[truth["kind"].isin(CINES) & truth["reported"] & truth["keep"].astype(bool)]
    return {
        f"videos/{salted_id(SALT, 'study', s)}/{salted_id(SALT, 'instance', u)}{SUFFIX[mode]}": path
        for s, u, path in zip(kept["study_uid"], kept["sop_uid"], kept["path"], strict=True)
    }


@pytest.mark.parametrize("mode", MODES)
def test_every_cine_of_a_reported_study_is_in_the_manifest_once(request, archive, truth, mode):
    reference = _ingested(request, mode)
    manifest = pd.read_parquet(reference / "manifest.parquet")
    expected = _expected_videos(truth, mode)
    assert manifest["video_path"].is_unique
    assert set(manifest["video_path"]) == set(expected)
    assert all((reference / p).is_file() for p in manifest["video_path"])
    if mode == "link":  # the source file itself, under a name that holds no header value
        for p in manifest["video_path"]:
            assert os.path.samefile(reference / p, archive / "dicom" / expected[p])
    assert set(manifest["kind"]) == {"bmode", "color"} and set(manifest["view"]) == {"unknown"}
    assert manifest["cm_per_px"].gt(0).all() and manifest["fps"].eq(25.0).all()
    assert manifest["report"].str.len().gt(0).all()
    assert set(manifest["split"]) <= {"train", "val", "test"}
    # a patient's studies share one split
    assert manifest.groupby("patient_id")["split"].nunique().eq(1).all()


@pytest.mark.parametrize("mode", MODES)
def test_every_other_file_is_reported_with_its_reason(request, truth, mode):
    _assert_every_other_file_is_reported(_ingested(request, mode), truth)


def _assert_every_other_file_is_reported(out: Path, truth: pd.DataFrame) -> None:
    report = pd.read_csv(out / "ingest_report.csv", dtype=str)
    used = truth["reported"] & truth["keep"].astype(bool) & truth["kind"].isin((*CINES, "sr"))
    assert set(report["key"]) == set(truth.loc[~used, "key"])
    assert report["key"].is_unique
    reasons = dict(zip(report["key"], report["reason"], strict=True))
    for row in truth[~used].itertuples():
        reason = reasons[row.key]
        if row.kind in ("junk", "corrupt"):  # not DICOM, or no header to read
            assert "DICOM" in reason, (row.path, reason)
        elif row.kind == "other_modality":  # sorted out before the studies are grouped
            assert "not an echo image (modality CT" in reason, (row.path, reason)
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


@pytest.mark.parametrize("mode", MODES)
def test_the_sr_measurements_are_the_manifest_columns(request, truth, mode):
    manifest = pd.read_parquet(_ingested(request, mode) / "manifest.parquet")
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
    """Identifiers in any file or link target; text files must not hold even their common prefix ZQX.

    Linked videos (``*.dcm``) are the export's own files, checked as training reads them
    (:func:`test_a_linked_video_reads_as_its_converted_twin`), not as bytes.
    """
    found = []
    for file in folder.rglob("*"):
        if file.is_symlink():
            target = os.readlink(file).lower()
            found += [f"{file.name} -> {s}" for s in identifiers if s.lower() in target]
        if not file.is_file() or file.suffix == ".dcm":
            continue
        data = file.read_bytes().lower()
        wanted = identifiers + (["ZQX"] if file.suffix in (".csv", ".json", ".txt", "") else [])
        found += [f"{file.name}: {s}" for s in wanted if s.lower().encode() in data]
    for table in folder.glob("*.parquet"):
        text = pd.read_parquet(table).astype(str).to_csv().lower()
        found += [f"{table.name}: {s}" for s in identifiers if s.lower() in text]
    return found


@pytest.mark.parametrize("mode", MODES)
def test_no_identifier_in_any_output_log_or_message(request, archive, truth, tmp_path, capsys, caplog, mode):
    reference = _ingested(request, mode)
    assert _leaks(reference, _identifiers(truth)) == []
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "cli"
    args = ["ingest", str(archive / "dicom"), "--reports", str(archive / "reports.csv"), "--out", str(out)]
    assert main([*args, "--workers", "2", "--salt", SALT, "--videos", mode]) == 0
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


@pytest.mark.parametrize("mode", MODES)
def test_a_run_stopped_early_resumes_to_the_same_manifest(request, archive, tmp_path, mode):
    reference = _ingested(request, mode)
    out = tmp_path / "out"
    config = IngestConfig(salt=SALT, limit=5, progress=False, videos=mode)
    first = ingest(archive / "dicom", archive / "reports.csv", out, config)
    assert not first.complete and first.studies_done == 5 and not (out / "manifest.parquet").exists()
    assert len(list((out / "studies").glob("*.json"))) == 5
    other = {"convert": "link", "link": "convert"}[mode]
    with pytest.raises(ValueError, match=f"started with videos '{mode}'"):  # no folder of both kinds
        ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, videos=other))
    second = ingest(
        archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, progress=False, videos=mode)
    )
    assert second.complete
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(reference / "manifest.parquet")
    )
    with pytest.raises(ValueError, match="another salt"):
        ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt="other", progress=False))


@pytest.mark.parametrize("mode", MODES)
def test_a_crash_mid_run_resumes_each_study_once(request, archive, tmp_path, monkeypatch, mode):
    import echoclip.data.ingest as module

    reference = _ingested(request, mode)
    config = IngestConfig(salt=SALT, progress=False, videos=mode)

    real, calls = module._ingest_study, []

    def crash_after_three(job):
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(job.study_id)
        return real(job)

    out = tmp_path / "out"
    monkeypatch.setattr(module, "_ingest_study", crash_after_three)
    with pytest.raises(RuntimeError, match="killed"):
        ingest(archive / "dicom", archive / "reports.csv", out, config)
    monkeypatch.setattr(module, "_ingest_study", real)
    assert not list(out.rglob("*.tmp"))
    redone = []
    monkeypatch.setattr(module, "_ingest_study", lambda job: redone.append(job.study_id) or real(job))
    ingest(archive / "dicom", archive / "reports.csv", out, config)
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


@pytest.mark.parametrize("mode", MODES)
def test_training_runs_on_the_ingested_data(request, tmp_path, mode):
    from echoclip.data.synthetic import simulate_reports
    from echoclip.tokenizer import EchoTokenizer
    from echoclip.train.clip import train_clip
    from echoclip.train.config import TrainConfig

    config = TrainConfig(
        out=str(tmp_path / "clip"), steps=2, batch_size=4, warmup_steps=1, tensorboard=False, progress=False
    )
    train_clip(
        _ingested(request, mode),
        config,
        model="echoclip-tiny",
        tokenizer=EchoTokenizer.train(simulate_reports(50, seed=1)),
        augment=False,
        val_split=None,
        zero_shot_prompts=None,
        ood=False,
    )
    assert (tmp_path / "clip" / "final" / "model.safetensors").is_file()
    assert not (tmp_path / "clip" / "skipped.csv").exists()  # every video read, linked ones too


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
    with pytest.raises(ValueError, match="unknown videos mode 'copy'; known: convert, link"):
        ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(videos="copy"))


def test_a_linked_manifest_is_the_converted_one_but_for_its_paths(reference, linked):
    converted = pd.read_parquet(reference / "manifest.parquet")
    links = pd.read_parquet(linked / "manifest.parquet")
    assert links["video_path"].str.endswith(".dcm").all()
    # the geometry, timing and scale the header gives are those of the decoded, cropped video
    links["video_path"] = links["video_path"].str.removesuffix(".dcm") + ".avi"
    pd.testing.assert_frame_equal(links, converted)
    # the same files left out for the same reasons; the cut-short cine is found from its layout
    a = pd.read_csv(reference / "ingest_report.csv", dtype=str).set_index("key")
    b = pd.read_csv(linked / "ingest_report.csv", dtype=str).set_index("key")
    assert a.index.equals(b.index) and a["file"].equals(b["file"])
    differ = a["reason"] != b["reason"]
    assert differ.sum() <= 1 and all("truncated" in r for r in b.loc[differ, "reason"])


def test_a_linked_video_reads_as_its_converted_twin(reference, linked, truth):
    """The reader crops, masks and de-identifies a linked DICOM as conversion did, on every read."""
    from echoclip.data.video import load_video

    manifest = pd.read_parquet(reference / "manifest.parquet")
    identifiers = [s.lower() for s in [*_identifiers(truth), "ZQX"]]
    for path in manifest["video_path"].iloc[::9]:
        converted = load_video(reference / path)
        read = load_video(linked / (path.removesuffix(".avi") + ".dcm"))
        assert read.frames.shape == converted.frames.shape and read.fps == converted.fps
        assert (read.frames == converted.frames).all()  # lossless AVI: the very frames
        assert [s for s in identifiers if s in repr(read.meta).lower()] == []


def test_links_fall_back_to_symbolic_links_then_copies(archive, truth, tmp_path, monkeypatch, caplog):
    from pydicom.fileset import FileSet

    from echoclip.data.video import load_video

    def no_hard_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    config = IngestConfig(salt=SALT, progress=False, videos="link")
    # the export's folders hold the patient's name: a link would store it, so the cines are copied
    caplog.set_level(logging.INFO)
    out = tmp_path / "copied"
    result = ingest(archive / "dicom", archive / "reports.csv", out, config)
    assert result.links == {"copy": result.videos} and f"(linked: {result.videos} copies)" in result.summary()
    assert f"{result.videos} of {result.videos} cines were copied" in caplog.text
    assert [s for s in [*_identifiers(truth), "ZQX"] if s.lower() in caplog.text.lower()] == []
    videos = [p for p in out.rglob("*.dcm")]
    assert len(videos) == result.videos and not any(p.is_symlink() for p in videos)
    assert _leaks(out, _identifiers(truth)) == []

    # an export laid out as a CD (PT000000/ST000000/...) names no one: symbolic links
    broken = set(truth.loc[truth["kind"].eq("truncated"), "study_uid"])
    reported = truth[truth["reported"] & truth["kind"].eq("sr") & ~truth["study_uid"].isin(broken)]
    members = truth[truth["study_uid"].eq(reported["study_uid"].iloc[0]) & truth["kind"].isin(CINES)]
    fs = FileSet()
    for path in members["path"]:
        fs.add(archive / "dicom" / path)
    cd = tmp_path / "cd"
    fs.write(cd)
    out = tmp_path / "symlinked"
    result = ingest(cd, archive / "reports.csv", out, config)
    videos = sorted(out.rglob("*.dcm"))
    assert result.links == {"symlink": len(members)} and all(p.is_symlink() for p in videos)
    assert all(Path(os.readlink(p)).is_absolute() and Path(os.readlink(p)).is_relative_to(cd) for p in videos)
    assert _leaks(out, _identifiers(truth)) == []
    assert load_video(videos[0]).frames.ndim == 4

    # no symbolic links either (a file system without them): copies
    monkeypatch.setattr(os, "symlink", no_hard_links)
    result = ingest(cd, archive / "reports.csv", tmp_path / "plain", config)
    assert result.links == {"copy": len(members)}


def test_a_crash_between_two_links_leaves_no_temporary_name(archive, linked, tmp_path, monkeypatch):
    from echoclip import atomic

    real, made = atomic.link, []

    def crash_on_the_fifth(source, path, **kwargs):  # in the second study: it has three cines
        if len(made) == 4:
            raise KeyboardInterrupt
        made.append(path)
        return real(source, path, **kwargs)

    out = tmp_path / "out"
    config = IngestConfig(salt=SALT, progress=False, videos="link")
    monkeypatch.setattr(atomic, "link", crash_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        ingest(archive / "dicom", archive / "reports.csv", out, config)
    monkeypatch.setattr(atomic, "link", real)
    assert len(list(out.rglob("*.dcm"))) == 4 and len(list((out / "studies").glob("*.json"))) == 1
    ingest(archive / "dicom", archive / "reports.csv", out, config)  # links the unfinished study again
    assert not list(out.rglob("*.tmp"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(linked / "manifest.parquet")
    )


@pytest.mark.parametrize("mode", MODES)
def test_an_export_full_of_distractors_and_corrupt_files_is_accounted_for(tmp_path, mode):
    archive = simulate_archive(
        tmp_path / "export", n=6, seed=8, size=32, frames=16, stills=2, distractors=0.1, corrupt=0.05
    )
    truth = _truth(archive)
    kinds = truth["kind"].value_counts()
    assert kinds["still"] == 2 * 6 and kinds["other_modality"] >= 1
    assert kinds[["junk", "other_modality"]].sum() - 1 >= 0.1 * len(truth)  # BROKEN.dcm is corrupt
    assert kinds.reindex(["truncated", "corrupt"]).fillna(0).sum() + 1 >= 0.05 * len(truth)
    out = tmp_path / "out"
    result = ingest(archive / "dicom", archive / "reports.csv", out, IngestConfig(salt=SALT, videos=mode))
    assert result.complete
    _assert_every_other_file_is_reported(out, truth)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest["video_path"]) == set(_expected_videos(truth, mode))
    # a note in a folder of its own inside the patient's is shown without the names above it
    assert _leaks(out, _identifiers(truth)) == []


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


def test_a_killed_process_resumes_to_the_same_manifest(archive, reference, tmp_path):
    """SIGKILL of a real ``echoclip ingest`` process mid-run, then a rerun: the same manifest."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    command = [sys.executable, "-m", "echoclip.cli.main", "ingest", str(archive / "dicom")]
    command += ["--reports", str(archive / "reports.csv"), "--out", str(out), "--salt", SALT]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "studies").glob("*.json"))) < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "no study finished within two minutes"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished first
    assert not (out / "manifest.parquet").exists()
    assert (
        main(
            [
                "ingest",
                str(archive / "dicom"),
                "--reports",
                str(archive / "reports.csv"),
                "--out",
                str(out),
                "--salt",
                SALT,
            ]
        )
        == 0
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(reference / "manifest.parquet")
    )
