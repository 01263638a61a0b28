"""Patient data never leaves a DICOM: not in returned objects, files, logs or errors."""

from __future__ import annotations

import csv
import logging
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from echoclip.cli.main import main as cli_main
from echoclip.data.datasets import Manifest
from echoclip.data.deid import (
    SALT_ENV,
    dicom_meta,
    hash_uid,
    identifying_values,
    redact,
    redact_path,
    shown_path,
)
from echoclip.data.dicom import write_dicom
from echoclip.data.shards import ShardDataset
from echoclip.data.transforms import PreprocessConfig, VideoTransform
from echoclip.data.video import load_video
from echoclip.errors import VideoReadError

PHI = {
    "PatientName": "Zqxwvbl^Jorkens",
    "PatientID": "PID-93817265",
    "PatientBirthDate": "19230417",
    "AccessionNumber": "ACC55501234",
    "StudyDate": "19870923",
}
STUDY_UID = "1.2.826.0.1.3680043.8.498.99999999901"
NEEDLES = [*PHI.values(), "Zqxwvbl", "Jorkens", STUDY_UID]


def _cine(seed: int = 0, t: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, 8, 10, 1), dtype=np.uint8).repeat(4, 1).repeat(4, 2).repeat(3, 3)


def _assert_clean(text: str, where: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"{needle!r} leaked into {where}"


def test_patient_data_never_leaves_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    tags = {**PHI, "StudyInstanceUID": STUDY_UID}
    good = write_dicom(_cine(), tmp_path / "good.dcm", fps=30, compression="jpeg", tags=tags)
    untimed = write_dicom(_cine(1), tmp_path / "untimed.dcm", fps=None, tags=tags)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: int(len(data) * 0.7)])
    no_pixels = tmp_path / "no_pixels.dcm"
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(no_pixels)
    for path in (good, untimed, no_pixels):  # the fixtures do hold the strings
        assert PHI["PatientID"].encode() in path.read_bytes()
    caplog.clear()

    # load
    video = load_video(good)
    _assert_clean(repr(video), "a Video repr")
    _assert_clean(repr(video.meta), "Video.meta")
    assert video.meta["study_hash"] == hash_uid(STUDY_UID)

    # dataset
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "video_path": [p.name for p in (good, untimed, truncated, no_pixels)],
            "report": ["LV EF 55%."] * 4,
            "patient_id": ["anon-1"] * 4,
            "study_id": ["study-1"] * 4,
        }
    ).to_csv(manifest, index=False)
    dataset = Manifest(manifest, transform=VideoTransform(PreprocessConfig(image_size=16, num_frames=4)))
    items = [dataset[i] for i in range(len(dataset))]
    assert items[0] is not None and items[1:] == [None, None, None]
    _assert_clean(repr(items) + repr(dataset) + repr(list(dataset.skipped)), "dataset items and skips")

    # preprocess (the CLI end to end)
    out = tmp_path / "shards"
    assert cli_main(["preprocess", "--manifest", str(manifest), "--out", str(out), "--size", "16"]) == 0
    shards = ShardDataset(out)
    _assert_clean(repr([{k: v for k, v in s.items() if k != "video"} for s in shards]), "shard samples")

    # forced errors
    messages = []
    for path in (untimed, truncated, no_pixels):
        with pytest.raises(VideoReadError) as err:
            load_video(path)
        messages.append("".join(traceback.format_exception(err.value)))
    assert "no frame timing" in messages[0] and "no pixel data" in messages[2]
    _assert_clean("\n".join(messages), "exception text")

    # every file written, every log line, everything printed
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    assert {p.name for p in written} >= {"manifest.csv", "shards.json", "skipped.csv", "shard-000000.tar"}
    for path in written:
        raw = path.read_bytes()
        for needle in NEEDLES:
            assert needle.encode() not in raw, f"{needle!r} leaked into {path.name}"
    captured = capsys.readouterr()
    _assert_clean(captured.out + captured.err, "console output")
    _assert_clean("\n".join(r.getMessage() for r in caplog.records), "log records")
    assert any("skipped 3 unreadable files" in r.getMessage() for r in caplog.records)


def test_meta_is_an_allow_list(tmp_path: Path) -> None:
    path = write_dicom(_cine(), tmp_path / "a.dcm", fps=25, tags={**PHI, "InstitutionName": "St Elsewhere"})
    meta = dicom_meta(pydicom.dcmread(path))
    assert set(meta) <= {
        "source",
        "modality",
        "manufacturer",
        "sop_class",
        "photometric_interpretation",
        "transfer_syntax",
        "study_hash",
        "series_hash",
        "ultrasound_regions",
    }
    assert "St Elsewhere" not in repr(meta)


def test_uid_hash_is_salted_stable_and_groups_a_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = write_dicom(_cine(), tmp_path / "a.dcm", fps=25, tags={"StudyInstanceUID": STUDY_UID})
    b = write_dicom(_cine(1), tmp_path / "b.dcm", fps=25, tags={"StudyInstanceUID": STUDY_UID})
    meta_a, meta_b = load_video(a).meta, load_video(b).meta
    assert meta_a["study_hash"] == meta_b["study_hash"]  # same study: grouped
    assert meta_a["series_hash"] != meta_b["series_hash"]  # different series
    assert hash_uid(STUDY_UID, salt="x") != hash_uid(STUDY_UID, salt="y")
    monkeypatch.setenv(SALT_ENV, "site-secret")
    assert hash_uid(STUDY_UID) == hash_uid(STUDY_UID, salt="site-secret")
    assert load_video(a).meta["study_hash"] == hash_uid(STUDY_UID, salt="site-secret")


def test_redact_removes_values_and_name_parts() -> None:
    ds = pydicom.Dataset()
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    values = identifying_values(ds)
    assert "Jorkens" in values and "PID-93817265" in values
    text = redact("decoder failed near Jorkens, PID-93817265 (19230417)", ds)
    assert text == "decoder failed near [redacted], [redacted] ([redacted])"


def test_redaction_replaces_whole_values_only() -> None:
    values = ["OB", "DOE^JANE", "DOE", "JANE"]
    assert (
        redact("/data/OBXXXX1A_2frame.dcm: no timing", values=values)
        == "/data/OBXXXX1A_2frame.dcm: no timing"
    )
    assert redact("near OB, Jane Doe and DOE^JANE", values=values) == (
        "near [redacted], [redacted] [redacted] and [redacted]"
    )
    assert (
        str(redact_path("/data/OB/OBXXXX1A.dcm", values={"OB": "patient"})) == "/data/[patient]/OBXXXX1A.dcm"
    )
    labels = {"DOE^JANE": "patient", "DOE": "patient", "JANE": "patient", "19870923": "date"}
    shown = redact_path("/exports/19870923/DOE^JANE/DOE^JANE_0001.dcm", values=labels)
    assert str(shown) == "/exports/[date]/[patient]/[patient]_0001.dcm"
    assert shown_path("/exports/19870923/DOE^JANE/x.dcm", "/exports", shown.with_name("x.dcm")) == (
        "[date]/[patient]/x.dcm"
    )
    # matching ignores case beyond ASCII too ("İ" is an "i"), with or without ASCII on either side
    for path, value in (("/exports/İlhan_01.dcm", "ILHAN"), ("/exports/ilhan_01.dcm", "İLHAN")):
        assert "lhan" not in str(redact_path(path, values={value: "patient"})).lower()
    assert str(redact_path("/exports/ilhanx/x.dcm", values={"ILHAN": "patient"})) == "/exports/ilhanx/x.dcm"


def test_short_header_value_inside_a_file_name_is_kept(tmp_path: Path) -> None:
    """The header value "OB" once turned ``OBXXXX1A_2frame.dcm`` into ``[redacted]XXXX1A_2frame.dcm``."""
    path = write_dicom(_cine(), tmp_path / "OBXXXX1A_2frame.dcm", fps=None, tags={"PatientName": "OB^^^^"})
    with pytest.raises(VideoReadError) as err:
        load_video(path)
    assert str(err.value).startswith(f"{path}: no frame timing")
    assert err.value.path == path and "[redacted]" not in str(err.value)


PATIENT = "DOE^JANE"


def _assert_no_patient(text: str, where: str) -> None:
    for needle in (PATIENT, "DOE", "JANE"):
        assert needle.casefold() not in text.casefold(), f"{needle!r} leaked into {where}: {text[:300]}"


def test_patient_named_folders_and_files_are_shown_redacted_and_relative(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    """An export whose folder and file names hold the patient's name, as hospital exports do."""
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "export"
    folder = root / PATIENT / "echo"
    folder.mkdir(parents=True)
    tags = {"PatientName": PATIENT, "PatientID": "PID-0007"}
    good = write_dicom(_cine(), folder / "IM0001.dcm", fps=30, tags=tags)
    untimed = write_dicom(_cine(1), folder / f"{PATIENT}_0002.dcm", fps=None, tags=tags)
    no_pixels = folder / f"{PATIENT}.dcm"
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(no_pixels)
    data = write_dicom(_cine(2), folder / "IM0004.dcm", fps=30, compression="jpeg", tags=tags).read_bytes()
    truncated = folder / "IM0004.dcm"
    truncated.write_bytes(data[: int(len(data) * 0.7)])
    bad = {untimed: "no frame timing", no_pixels: "no pixel data", truncated: ""}
    manifest = root / "manifest.csv"
    pd.DataFrame(
        {
            "video_path": [str(p.relative_to(root)) for p in (good, *bad)],
            "report": ["LV EF 55%."] * 4,
            "patient_id": ["anon-1"] * 4,
            "study_id": ["study-1"] * 4,
        }
    ).to_csv(manifest, index=False)
    caplog.clear()

    # errors of the reader: the path as given, each patient-named component replaced whole
    for path, cause in bad.items():
        with pytest.raises(VideoReadError) as err:
            load_video(path)
        message = "".join(traceback.format_exception(err.value))
        _assert_no_patient(message, "an error")
        shown = str(err.value).removeprefix(f"{err.value.path}: ")
        assert cause in shown and str(err.value.path).startswith(str(root))
        assert Path(str(err.value.path).replace("[patient]", PATIENT)) == path  # not garbled

    # the dataset's log and report: relative to the root, and to nothing above it
    dataset = Manifest(manifest, transform=VideoTransform(PreprocessConfig(image_size=16, num_frames=4)))
    assert dataset[0] is not None and [dataset[i] for i in (1, 2, 3)] == [None, None, None]
    shown = sorted(r.path for r in dataset.skipped)
    assert shown == sorted(
        ["[patient]/echo/[patient]_0002.dcm", "[patient]/echo/[patient].dcm", "[patient]/echo/IM0004.dcm"]
    )
    for record in dataset.skipped:
        assert (root / record.path.replace("[patient]", PATIENT)).is_file()  # not garbled
    report = dataset.skipped.report(tmp_path / "run")
    with open(report, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == shown
    assert {r["file"]: r["reason"] for r in rows}["[patient]/echo/[patient].dcm"].startswith("no pixel data")

    # the same through the command line, which writes shards, their state and skipped.csv
    out = tmp_path / "shards"
    assert cli_main(["preprocess", "--manifest", str(manifest), "--out", str(out), "--size", "16"]) == 0
    with open(out / "skipped.csv", newline="") as f:
        assert sorted(r["file"] for r in csv.DictReader(f)) == shown

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "[patient]/echo/[patient]_0002.dcm" in logged and str(root) not in logged
    _assert_no_patient(logged, "the log")
    captured = capsys.readouterr()
    _assert_no_patient(captured.out + captured.err, "console output")
    for path in [*(tmp_path / "run").rglob("*"), *out.rglob("*")]:
        if path.is_file():
            _assert_no_patient(path.read_bytes().decode("latin-1"), path.name)
