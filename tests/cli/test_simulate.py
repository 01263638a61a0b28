"""``echoclip simulate`` and ``echoclip demo`` through the console entry point."""

from __future__ import annotations

import pandas as pd

from echoclip.cli.main import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_simulate_writes_a_data_set_and_one_summary_line(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    code = main(
        [
            "-q",
            "simulate",
            "--out",
            str(out),
            "--n",
            "3",
            "--seed",
            "2",
            "--size",
            "64",
            "--frames",
            "16",
            "--fps",
            "25",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert len(stdout) == 1 and stdout[0].startswith("wrote 3 studies (3 videos, ") and str(out) in stdout[0]
    files = pd.read_csv(out / "FileList.csv")
    assert len(files) == 3 and set(files["NumberOfFrames"]) == {16} and set(files["FrameHeight"]) == {64}
    assert len(list((out / "Videos").glob("*.avi"))) == 3


def test_simulate_real_reports_record_the_ef_they_state(tmp_path, capsys) -> None:
    from echoclip.data.synthetic import extract_ef

    out = tmp_path / "sim"
    args = [
        "--out",
        str(out),
        "--n",
        "4",
        "--size",
        "32",
        "--frames",
        "16",
        "--fps",
        "25",
        "--realism",
        "real",
    ]
    assert main(["-q", "simulate", *args]) == 0
    assert capsys.readouterr().out.strip().endswith(", realism real")
    manifest = pd.read_parquet(out / "manifest.parquet")
    for report, stated in zip(manifest["report"], manifest["reported_ef"], strict=True):
        found = extract_ef(report)
        if pd.isna(stated):
            assert found == []
        else:
            assert found and all(lo <= stated <= hi for lo, hi in found)
    code = main(
        ["simulate", "--format", "dicom-archive", "--realism", "real", "--out", str(tmp_path / "pacs")]
    )
    assert code == 1 and "--realism" in _one_line_error(capsys)


def test_simulate_with_zero_studies_fails_with_one_line(tmp_path, capsys) -> None:
    code = main(["simulate", "--out", str(tmp_path / "sim"), "--n", "0"])
    assert code == 1
    assert "at least 1" in _one_line_error(capsys)
    assert not (tmp_path / "sim").exists()


def test_simulate_into_an_unwritable_folder_fails_with_one_line(tmp_path, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code = main(["simulate", "--out", str(blocker / "sim"), "--n", "1"])
    assert code == 1
    assert "file.txt" in _one_line_error(capsys)


def test_simulate_refuses_to_replace_a_folder_without_overwrite(tmp_path, capsys) -> None:
    (tmp_path / "sim").mkdir()
    assert main(["simulate", "--out", str(tmp_path / "sim"), "--n", "1"]) == 1
    assert "already exists" in _one_line_error(capsys)


def test_simulate_a_dicom_archive_then_ingest_it(tmp_path, capsys) -> None:
    out = tmp_path / "pacs"
    args = ["--out", str(out), "--n", "3", "--seed", "4", "--size", "32", "--frames", "16", "--fps", "25"]
    assert main(["-q", "simulate", "--format", "dicom-archive", *args]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote a DICOM export of 3 studies (") and (out / "reports.csv").is_file()
    truth = pd.read_csv(out / "truth.csv")
    kinds = set(truth["kind"])
    assert {
        "bmode_cine",
        "color_cine",
        "still",
        "spectral_doppler",
        "sr",
        "secondary_capture",
        "junk",
    } <= kinds
    data = tmp_path / "data"
    assert (
        main(["-q", "ingest", str(out / "dicom"), "--reports", str(out / "reports.csv"), "--out", str(data)])
        == 0
    )
    assert capsys.readouterr().out.startswith("ingested ")
    assert (data / "manifest.parquet").is_file() and (data / "ingest_report.csv").is_file()


def test_simulate_studies_of_several_views_and_repeated_videos(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    args = ["--out", str(out), "--n", "4", "--size", "32", "--frames", "16", "--fps", "25"]
    views = ["--views", "A4C,A2C,PLAX,PSAX", "--videos-per-study", "1-3", "--view-missing", "0.1"]
    assert main(["-q", "simulate", *args, *views]) == 0
    assert capsys.readouterr().out.startswith("wrote 4 studies (")
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest["view"]) <= {"A4C", "A2C", "PLAX", "PSAX"} and manifest["study_id"].nunique() == 4
    assert manifest.groupby(["study_id", "view"]).size().between(1, 3).all()


def test_simulate_rejects_unknown_views_and_bad_counts_with_one_line(tmp_path, capsys) -> None:
    from echoclip.cli import simulate
    from echoclip.data.synthetic import VIEWS

    assert simulate._VIEWS == VIEWS  # the CLI's list (no numpy at import) is the simulator's
    base = ["simulate", "--out", str(tmp_path / "sim"), "--n", "1"]
    assert main([*base, "--views", "A4C,A5C"]) == 1
    assert "A5C" in _one_line_error(capsys)
    for bad in ("0", "3-1", "1-x", "1-2-3", ""):
        assert main([*base, "--videos-per-view", bad]) == 1
        assert "--videos-per-view" in _one_line_error(capsys)
    assert main([*base, "--view-missing", "1.5"]) == 1
    assert "view_missing" in _one_line_error(capsys)
    assert not (tmp_path / "sim").exists()
