"""Public data sets in their published layouts: EchoNet-Pediatric, EchoNet-LVH, CAMUS, TMED-2.

Each fixture is written by the test in the layout the release documents (tiny videos,
NIfTI cines, PNG stills; no data shipped); each is opened the way ``--data`` opens it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from echoclip.data.datasets import EchoNetDynamic, open_dataset
from echoclip.data.public_datasets import CAMUS, TMED2, EchoNetLVH, EchoNetPediatric
from echoclip.data.scale import cropped_scale
from echoclip.data.transforms import PreprocessConfig, VideoTransform
from echoclip.data.video import Video, load_video, save_video
from echoclip.errors import DataError

CFG = PreprocessConfig(image_size=16, num_frames=4)
SPACING_MM = (0.308, 0.154)  # CAMUS pixel size, x then y
NX, NY, NT = 40, 32, 6  # CAMUS fixture: width, height, frames


def _frames(seed: int, t: int = 8, h: int = 32, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h // 4, w // 4, 1), dtype=np.uint8).repeat(4, 1).repeat(4, 2).repeat(3, 3)


# ---------------------------------------------------------------------------------------
# fixtures in each release's layout


def write_pediatric(root: Path, per_view: int = 10) -> Path:
    """``A4C/`` and ``PSAX/``: FileList.csv (folds 0-9), VolumeTracings.csv (X, Y, Frame), Videos/."""
    for v, view in enumerate(("A4C", "PSAX")):
        folder = root / view
        (folder / "Videos").mkdir(parents=True)
        rows, traces = [], []
        for i in range(per_view):
            name = f"CR{v}{i:02d}a-CR{v}{i:02d}b-{i:06d}.avi"
            save_video(_frames(10 * v + i), folder / "Videos" / name, fps=30)
            rows.append([name, 50.0 + i, "MF"[i % 2], 2.0 + i, 12.0 + i, 90.0 + i, i % 10])
            traces += [[name, 10.0 + k, 12.0 + k, 3] for k in range(4)] + [[name, 0, 0, "No Systolic"]]
        columns = ["FileName", "EF", "Sex", "Age", "Weight", "Height", "Split"]
        pd.DataFrame(rows, columns=columns).to_csv(folder / "FileList.csv", index=False)
        pd.DataFrame(traces, columns=["FileName", "X", "Y", "Frame"]).to_csv(
            folder / "VolumeTracings.csv", index=False
        )
    return root


LVH_SPLITS = ["train", "train", "train", "val", "test"]


def write_lvh(root: Path) -> Path:
    """MeasurementsList.csv (one row per measurement) and videos spread over Batch1..Batch4."""
    for b in range(1, 5):
        (root / f"Batch{b}").mkdir(parents=True)
    rows = []
    for i, split in enumerate(LVH_SPLITS):
        name = f"0X{i + 1:016X}"
        save_video(_frames(100 + i), root / f"Batch{i % 2 + 1}" / f"{name}.avi", fps=50)
        for j, calc in enumerate(("IVSd", "LVIDd", "LVIDs", "LVPWd")):
            if calc == "LVIDs" and i == 4:
                continue  # not measured
            value = 1.0 + i + j / 10
            rows.append([name, calc, value, 2 + j, 5.0, 9.0, 6.0, 20.0, 8, 50, 32, 32, split])
    columns = ["HashedFileName", "Calc", "CalcValue", "Frame", "X1", "X2", "Y1", "Y2"]
    columns += ["Frames", "FPS", "Width", "Height", "split"]
    pd.DataFrame(rows, columns=columns).to_csv(
        root / "MeasurementsList.csv"
    )  # the release keeps its index column
    return root


CAMUS_SPLITS = {"training": [1, 2], "validation": [3], "testing": [4]}


def camus_cine(seed: int) -> np.ndarray:
    """``uint8 [x, y, t]`` as a CAMUS half sequence stores it, with a bright column at x = 3."""
    data = np.random.default_rng(seed).integers(0, 200, (NX, NY, NT), dtype=np.uint8)
    data[3, :, :] = 255
    return data


def write_camus(root: Path, splits: bool = True) -> Path:
    """database_nifti/patientXXXX/ with half sequences, masks and Info_{2CH,4CH}.cfg."""
    for p in range(1, 5):
        patient = root / "database_nifti" / f"patient{p:04d}"
        patient.mkdir(parents=True)
        for tag in ("2CH", "4CH"):
            image = nib.Nifti1Image(camus_cine(10 * p + (tag == "4CH")), np.eye(4))
            image.header.set_zooms((*SPACING_MM, 1.0))
            if tag == "2CH":  # the 4CH files leave the unit unknown: CAMUS documents millimetres
                image.header.set_xyzt_units("mm")
            nib.save(image, patient / f"patient{p:04d}_{tag}_half_sequence.nii.gz")
            mask = nib.Nifti1Image(np.zeros((NX, NY, NT), dtype=np.uint8), np.eye(4))
            nib.save(mask, patient / f"patient{p:04d}_{tag}_half_sequence_gt.nii.gz")
            (patient / f"Info_{tag}.cfg").write_text(
                f"ED: 1\nES: {NT}\nNbFrame: {NT}\nSex: {'FM'[p % 2]}\nAge: {50 + p}\n"
                f"ImageQuality: Good\nEF: {40 + p}\nFrameRate: 25.0\n"
            )
    if splits:
        (root / "database_split").mkdir()
        for name, patients in CAMUS_SPLITS.items():
            text = "".join(f"patient{p:04d}\n" for p in patients)
            (root / "database_split" / f"subgroup_{name}.txt").write_text(text)
    return root


TMED_ROWS = [
    # query_key, view_label, diagnosis_label, SourceFolder, diagnosis split, view split
    ("1s1_0.png", "PLAX", "no_AS", "view_and_diagnosis_labeled_set/labeled", "train", "train"),
    ("1s1_1.png", "PSAX", "no_AS", "view_and_diagnosis_labeled_set/labeled", "train", "train"),
    ("2s1_0.png", "PLAX", "severe_AS", "view_and_diagnosis_labeled_set/labeled", "train", "val"),
    ("3s2_0.png", "A4C", "mild_AS", "view_and_diagnosis_labeled_set/labeled", "val", "test"),
    ("4s1_0.png", "A2C", "moderate_AS", "view_and_diagnosis_labeled_set/labeled", "test", "train"),
    ("5s1_0.png", "PLAX", "Not_Provided", "view_labeled_set/labeled", "unlabeled", "train"),
]


def write_tmed2(root: Path) -> Path:
    """PNG stills in the folders SourceFolder names, DEV479/TMED2_fold0_labeledpart.csv, labels_per_image.csv."""
    rng = np.random.default_rng(7)
    for key, _, _, folder, _, _ in TMED_ROWS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / folder / key)
    columns = ["query_key", "view_label", "diagnosis_label", "SourceFolder"]
    columns += ["diagnosis_classifier_split", "view_classifier_split"]
    table = pd.DataFrame(TMED_ROWS, columns=columns)
    (root / "DEV479").mkdir()
    table.to_csv(root / "DEV479" / "TMED2_fold0_labeledpart.csv", index=False)
    table[["query_key", "view_label", "diagnosis_label"]].to_csv(root / "labels_per_image.csv", index=False)
    return root


@pytest.fixture(scope="module")
def pediatric(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pediatric(tmp_path_factory.mktemp("pediatric"))


@pytest.fixture(scope="module")
def lvh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lvh(tmp_path_factory.mktemp("lvh"))


@pytest.fixture(scope="module")
def camus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_camus(tmp_path_factory.mktemp("camus"))


@pytest.fixture(scope="module")
def tmed2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tmed2(tmp_path_factory.mktemp("tmed2"))


# ---------------------------------------------------------------------------------------
# EchoNet-Pediatric


def test_pediatric_folds_map_to_splits_in_both_views(pediatric: Path) -> None:
    counts = {s: len(open_dataset(pediatric, s, VideoTransform(CFG))) for s in ("train", "val", "test")}
    assert counts == {"train": 16, "val": 2, "test": 2}  # folds 0-7, 8, 9 of each view
    ds = open_dataset(pediatric, "test", VideoTransform(CFG))
    assert isinstance(ds, EchoNetPediatric)
    assert sorted(ds.table["view"]) == ["A4C", "PSAX"] and set(ds.table["fold"]) == {9}
    assert len(open_dataset(pediatric, None)) == 20
    rotated = EchoNetPediatric(pediatric, "test", test_fold=0, val_fold=1)
    assert set(rotated.table["fold"]) == {0}
    assert len(EchoNetPediatric(pediatric, "train", test_fold=0, val_fold=1)) == 16
    assert len(EchoNetPediatric(pediatric, ["fold3", "4"])) == 4
    assert len(EchoNetPediatric(pediatric, "all", views=["PSAX"])) == 10


def test_pediatric_items_carry_ef_and_demographics(pediatric: Path) -> None:
    ds = EchoNetPediatric(pediatric, "val", VideoTransform(CFG))
    listed = pd.read_csv(pediatric / "A4C" / "FileList.csv")
    row = listed[listed["Split"] == 8].iloc[0]
    item = ds[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["report"] == ""
    assert item["study_id"] == row["FileName"].removesuffix(".avi")
    assert item["ef"] == row["EF"]
    assert item["labels"] == {
        "ef": row["EF"],
        "age": row["Age"],
        "weight": row["Weight"],
        "height": row["Height"],
    }
    assert ds.table["sex"].iat[0] == row["Sex"] and ds.table["view"].iat[0] == "A4C"


def test_pediatric_folder_without_its_file_list_is_one_clear_error(tmp_path: Path, pediatric: Path) -> None:
    (tmp_path / "A4C" / "Videos").mkdir(parents=True)
    with pytest.raises(DataError, match=r"A4C/FileList\.csv") as raised:
        open_dataset(tmp_path, "train")
    assert str(tmp_path) in str(raised.value) and "PSAX" not in str(raised.value).split("(")[0]
    with pytest.raises(DataError, match="view folder of EchoNet-Pediatric"):
        EchoNetDynamic(pediatric / "A4C", "all")  # one view folder given as EchoNet-Dynamic


# ---------------------------------------------------------------------------------------
# EchoNet-LVH


def test_lvh_one_item_per_video_with_its_measurements(lvh: Path) -> None:
    counts = {s: len(open_dataset(lvh, s, VideoTransform(CFG))) for s in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 1, "test": 1}
    ds = open_dataset(lvh, "test", VideoTransform(CFG))
    assert isinstance(ds, EchoNetLVH)
    item = ds[0]
    assert item["video"].shape == (3, 4, 16, 16) and np.isnan(item["ef"])
    assert item["labels"]["ivsd_cm"] == pytest.approx(5.0)
    assert item["labels"]["lvidd_cm"] == pytest.approx(5.1)
    assert item["labels"]["lvpwd_cm"] == pytest.approx(5.3)
    assert np.isnan(item["labels"]["lvids_cm"])  # the list holds no LVIDs for this video
    assert ds.table["video_path"].iat[0] == "Batch1/0X0000000000000005.avi"
    assert set(ds.table["view"]) == {"PLAX"} and ds.table["fps"].iat[0] == 50
    train = EchoNetLVH(lvh, "train", VideoTransform(CFG))
    assert train.table["video_path"].str.split("/").str[0].tolist() == ["Batch1", "Batch2", "Batch1"]
    assert [round(train[i]["labels"]["ivsd_cm"], 3) for i in range(3)] == [1.0, 2.0, 3.0]


def test_lvh_video_in_no_batch_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_lvh(tmp_path / "lvh")
    (root / "Batch2" / "0X0000000000000002.avi").unlink()
    with caplog.at_level(logging.WARNING):
        ds = EchoNetLVH(root, "train", VideoTransform(CFG))
    assert len(ds) == 3 and "1 of 5 videos" in caplog.text
    assert ds[1] is None and len(ds.skipped) == 1 and "0X0000000000000002.avi" in ds.skipped[0].path


def test_lvh_list_missing_columns_is_one_clear_error(tmp_path: Path) -> None:
    root = write_lvh(tmp_path / "lvh")
    listed = pd.read_csv(root / "MeasurementsList.csv")
    listed.drop(columns=["CalcValue", "split"]).to_csv(root / "MeasurementsList.csv", index=False)
    with pytest.raises(DataError, match=r"MeasurementsList\.csv: lacks columns \['CalcValue', 'split'\]"):
        open_dataset(root, "train")
    (root / "MeasurementsList.csv").unlink()
    with pytest.raises(DataError, match="EchoNet-LVH folder lacks MeasurementsList.csv"):
        open_dataset(root, "train")  # the batch folders alone still say which data set it is


# ---------------------------------------------------------------------------------------
# CAMUS


def test_camus_splits_views_and_info(camus: Path) -> None:
    counts = {s: len(open_dataset(camus, s, VideoTransform(CFG))) for s in ("train", "val", "test")}
    assert counts == {"train": 4, "val": 2, "test": 2}  # patients x two views
    ds = open_dataset(camus, "val", VideoTransform(CFG))
    assert isinstance(ds, CAMUS)
    assert ds.table["view"].tolist() == ["A2C", "A4C"] and set(ds.table["study_id"]) == {"patient0003"}
    item = ds[1]
    assert item["video"].shape == (3, 4, 16, 16) and item["report"] == ""
    assert item["ef"] == 43.0 and item["labels"] == {"ef": 43.0, "age": 53.0}
    assert ds.table["ed_frame"].iat[0] == 0 and ds.table["es_frame"].iat[0] == NT - 1  # 0-based
    assert ds.table["image_quality"].iat[0] == "Good" and ds.table["frame_rate"].iat[0] == 25.0


def test_camus_cines_are_upright_and_read_at_the_recorded_rate(camus: Path) -> None:
    ds = CAMUS(camus, "train")
    path = ds.video_path(0)
    options = ds.file_options(path)
    assert options["fps"] == 25.0 and options["units"] == "mm"
    video = load_video(path, **options)
    assert video.frames.shape == (NT, NY, NX, 3) and video.fps == 25.0
    data = camus_cine(10 * 1)  # patient0001, 2CH
    np.testing.assert_array_equal(video.frames[2, :, :, 0], data[:, :, 2].T)  # rows go down the sector
    assert (video.frames[:, :, 3] == 255).all()  # NIfTI's x is across the frame: a column


@pytest.mark.parametrize("field_cm", [None, 2.0])
def test_camus_items_carry_the_header_scale_after_the_transform(camus: Path, field_cm: float | None) -> None:
    transform = VideoTransform(PreprocessConfig(image_size=16, num_frames=4, field_cm=field_cm))
    ds = CAMUS(camus, "all", transform)
    source = (SPACING_MM[0] / 10, SPACING_MM[1] / 10)  # cm per pixel, x and y
    if field_cm is None:
        expected = cropped_scale(source, NY, NX, 16)  # the short side (y) resized to 16 px
        assert expected == pytest.approx((0.0616, 0.0308))
    else:
        expected = (field_cm / 16, field_cm / 16)
    via_transform = transform.scaled(Video(np.zeros((NT, NY, NX, 3), np.uint8), 25.0, {"cm_per_px": source}))[
        1
    ]
    for i in (0, 1):  # 2CH (header in mm) and 4CH (unit unknown, CAMUS' millimetres)
        scale = ds[i]["cm_per_px"]
        assert scale.dtype == torch.float32
        np.testing.assert_allclose(scale.numpy(), expected, rtol=1e-5)
        np.testing.assert_allclose(scale.numpy(), via_transform.numpy(), rtol=1e-5)


def test_camus_wrong_layouts_are_one_clear_error(tmp_path: Path) -> None:
    root = write_camus(tmp_path / "camus", splits=False)
    assert len(open_dataset(root, None)) == 8
    with pytest.raises(DataError, match=r"database_split/subgroup_\{training,validation,testing\}\.txt"):
        open_dataset(root, "train")
    for cfg in root.glob("database_nifti/*/Info_*.cfg"):
        cfg.unlink()
    with pytest.raises(DataError, match=r"no patient folder holds Info_2CH\.cfg or Info_4CH\.cfg") as raised:
        open_dataset(root, None)
    assert str(root / "database_nifti") in str(raised.value)


# ---------------------------------------------------------------------------------------
# TMED-2


def test_tmed2_stills_are_one_frame_videos_with_view_and_diagnosis(tmed2: Path) -> None:
    counts = {s: len(open_dataset(tmed2, s, VideoTransform(CFG))) for s in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 1, "test": 1}
    ds = open_dataset(tmed2, "train", VideoTransform(CFG))
    assert isinstance(ds, TMED2) and ds.labels_file == tmed2 / "DEV479" / "TMED2_fold0_labeledpart.csv"
    assert ds.table["view"].tolist() == ["PLAX", "PSAX", "PLAX"]
    assert ds.table["diagnosis"].tolist() == ["no_AS", "no_AS", "severe_AS"]
    assert ds.table["study_id"].tolist() == ["1s1", "1s1", "2s1"]
    assert ds.table["patient_id"].tolist() == ["1", "1", "2"]
    item = ds[2]
    assert item["labels"] == {"as_severity": 4.0, "finding_aortic_stenosis": 1.0}
    assert ds[0]["labels"] == {"as_severity": 0.0, "finding_aortic_stenosis": 0.0}
    video = item["video"]
    assert video.shape == (3, 4, 16, 16)
    assert torch.equal(video[:, 0], video[:, 3])  # one frame, repeated over the clip
    still = load_video(tmed2 / TMED_ROWS[2][3] / TMED_ROWS[2][0])
    assert still.num_frames == 1 and still.fps == 1.0 and still.meta["cm_per_px"] is None


def test_tmed2_view_split_and_unlabelled_diagnosis(tmed2: Path) -> None:
    by_view = TMED2(tmed2, "train", split_by="view")
    assert by_view.table["study_id"].tolist() == ["1s1", "1s1", "4s1", "5s1"]
    view_only = by_view[3]
    assert np.isnan(view_only["labels"]["as_severity"]) and np.isnan(
        view_only["labels"]["finding_aortic_stenosis"]
    )
    assert by_view.table["video_path"].iat[3] == "view_labeled_set/labeled/5s1_0.png"
    per_image = TMED2(
        tmed2, "all", labels_file="labels_per_image.csv"
    )  # no SourceFolder: images found by name
    assert (
        len(per_image) == 6 and per_image.table["video_path"].iat[5] == "view_labeled_set/labeled/5s1_0.png"
    )
    with pytest.raises(DataError, match="no diagnosis_classifier_split column"):
        TMED2(tmed2, "train", labels_file="labels_per_image.csv")


# ---------------------------------------------------------------------------------------
# recognising layouts


def test_a_folder_in_no_layout_names_the_layouts_known(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a data set")
    with pytest.raises(DataError, match="no data set in this folder") as raised:
        open_dataset(tmp_path, "train")
    for name in ("manifest", "EchoNet-Dynamic", "EchoNet-Pediatric", "EchoNet-LVH", "CAMUS", "TMED-2"):
        assert name in str(raised.value)


def test_a_folder_in_two_layouts_is_refused(tmp_path: Path) -> None:
    write_lvh(tmp_path)
    (tmp_path / "FileList.csv").write_text("FileName,EF,ESV,EDV,Split\n")
    with pytest.raises(DataError, match=r"several data set layouts \(EchoNet-Dynamic, EchoNet-LVH\)"):
        open_dataset(tmp_path, "train")


def test_camus_split_folder_without_the_images_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "database_split").mkdir()
    with pytest.raises(DataError, match=r"CAMUS folder lacks database_nifti/"):
        open_dataset(tmp_path, "train")
