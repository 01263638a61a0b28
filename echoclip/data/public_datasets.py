"""Public echo data sets, each read in the layout its release documents.

===================  =====================================================================
class                the folder it reads
===================  =====================================================================
EchoNetPediatric     ``A4C/`` and ``PSAX/``, each with ``FileList.csv`` (FileName, EF, Sex,
                     Age, Weight, Height, Split = fold 0-9), ``VolumeTracings.csv``, ``Videos/``
EchoNetLVH           ``MeasurementsList.csv`` (HashedFileName, Calc, CalcValue, Frame, X1,
                     X2, Y1, Y2, split, Frames, FPS, Width, Height) and ``Batch1/`` ...
                     ``Batch4/`` holding ``<HashedFileName>.avi``
CAMUS                ``database_nifti/patientXXXX/`` with ``Info_{2CH,4CH}.cfg`` and
                     ``patientXXXX_{2CH,4CH}_half_sequence.nii.gz``; optional
                     ``database_split/subgroup_{training,validation,testing}.txt``
TMED2                PNG stills under the folders a labels CSV names (``SourceFolder`` +
                     ``query_key``), with ``view_label``, ``diagnosis_label`` and the
                     ``*_classifier_split`` columns
===================  =====================================================================

Each is a :class:`~echoclip.data.datasets.ClipDataset`: the same items (empty reports:
these releases have none), transforms, clip sampling, skip log and scale as
:class:`~echoclip.data.datasets.EchoNetDynamic`. Categorical labels (the view, a diagnosis,
sex) are columns of ``dataset.table``, which evaluation and fine-tuning read; numbers are
also in each item's ``labels``. :func:`~echoclip.data.datasets.open_dataset` recognises
every layout by its files, not by the folder's name. A folder that is recognised but
incomplete raises one :class:`~echoclip.errors.DataError` naming the folder and what
it lacks; errors name files and columns, never a row's identifiers.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echoclip.data.datasets import (
    ClipDataset,
    _float_columns,
    _select_split,
    register_layout,
)
from echoclip.data.transforms import ClipSampler
from echoclip.errors import DataError

__all__ = ["EchoNetPediatric", "EchoNetLVH", "CAMUS", "TMED2", "PEDIATRIC_VIEWS", "LVH_MEASUREMENTS"]

log = logging.getLogger(__name__)

PEDIATRIC_VIEWS: tuple[str, ...] = ("A4C", "PSAX")
LVH_MEASUREMENTS: tuple[str, ...] = ("IVSd", "LVIDd", "LVIDs", "LVPWd")
CAMUS_VIEWS: dict[str, str] = {"2CH": "A2C", "4CH": "A4C"}  # file tag -> the view as we name it
CAMUS_SPLIT_FILES: dict[str, str] = {
    "train": "subgroup_training.txt",
    "val": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
# TMED-2's diagnosis labels in order of severity (its five-class scheme)
TMED_SEVERITY: dict[str, float] = {
    "no_AS": 0.0,
    "mild_AS": 1.0,
    "mildtomod_AS": 2.0,
    "moderate_AS": 3.0,
    "severe_AS": 4.0,
}
TMED_DEFAULT_LABELS = "DEV479/TMED2_fold0_labeledpart.csv"


class _PublicDataset(ClipDataset):
    """A clip dataset whose table is built from a public release's own files.

    Subclasses build ``table`` (``video_path``, ``study_id``, ``patient_id``, ``split``,
    ``view`` and label columns) and call :meth:`_set_table`.
    """

    label_columns: list[str]

    def _set_table(
        self,
        root: Path,
        table: Any,
        label_columns: Sequence[str],
        transform: Callable[..., Any] | None,
        clip: ClipSampler | None,
        seed: int | None,
        read_options: dict[str, Any] | None,
    ) -> None:
        table = table.reset_index(drop=True)
        table.insert(1, "report", "")
        self.table = table
        self.label_columns = list(label_columns)
        self._labels = _float_columns(table, self.label_columns)
        super().__init__(root, transform, clip, seed, read_options)

    def _item(self, index: int, video: Any) -> dict[str, Any]:
        labels = {c: float(self._labels[index, j]) for j, c in enumerate(self.label_columns)}
        return {
            "video": video,
            "report": "",
            "study_id": str(self.table["study_id"].iat[index]),
            "patient_id": str(self.table["patient_id"].iat[index]),
            "ef": labels.get("ef", math.nan),
            "labels": labels,
            "index": index,
        }


def _wants_all(split: str | Sequence[str] | None) -> bool:
    return split is None or (isinstance(split, str) and split.lower() == "all")


def _read_csv(path: Path, required: Sequence[str], text: Sequence[str] = ()) -> Any:
    """A CSV of a release, with its required columns; one DataError naming the file otherwise."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={c: str for c in text})
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the table ({str(e).splitlines()[0][:160]})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: lacks columns {missing}; it has {sorted(map(str, table.columns))}")
    return table


def _numbers(table: Any, column: str) -> Any:
    import pandas as pd

    if column not in table.columns:
        return pd.Series(np.nan, index=table.index, dtype=float)
    return pd.to_numeric(table[column], errors="coerce")


# ---------------------------------------------------------------------------------------
# EchoNet-Pediatric


class EchoNetPediatric(_PublicDataset):
    """EchoNet-Pediatric: two EchoNet-Dynamic-like view folders, ``A4C/`` and ``PSAX/``.

    Each view folder holds ``FileList.csv`` (FileName, EF, Sex, Age, Weight, Height,
    Split), ``VolumeTracings.csv`` and ``Videos/*.avi``. The release's ``Split`` is not a
    train/val/test split but a fold, 0-9, of a ten-fold partition. This class maps folds
    to splits as follows:

    - folds 0-7 are ``"train"``, fold 8 is ``"val"``, fold 9 is ``"test"`` (80/10/10);
    - ``val_fold`` and ``test_fold`` move the two held-out folds, for cross-validation
      (e.g. ``test_fold=k, val_fold=(k + 1) % 10``); the other eight folds train;
    - a split may also name single folds, ``"fold3"`` or ``"3"``, alone or in a list.

    Both views map folds alike. Items carry EF as ``ef``; ``labels`` are ``ef``, ``age``,
    ``weight`` and ``height`` as the file lists give them; ``table`` adds ``view``
    (``"A4C"``/``"PSAX"``), ``sex``, ``fold`` and ``split``. File names are taken as they
    are (study and patient ids are the file's name; the release does not say which
    videos share a patient beyond its folds).

    Args:
        root: the folder holding ``A4C/`` and/or ``PSAX/``.
        split: ``"train"``, ``"val"``, ``"test"``, folds, a list of these, or ``"all"``.
        views: the view folders to read (default: those present).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | Sequence[str] | None = "train",
        transform: Callable[..., Any] | None = None,
        *,
        views: Sequence[str] | None = None,
        val_fold: int = 8,
        test_fold: int = 9,
        clip: ClipSampler | None = None,
        seed: int | None = None,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        import pandas as pd

        root = Path(root)
        if not (0 <= val_fold <= 9 and 0 <= test_fold <= 9 and val_fold != test_fold):
            raise ValueError(
                f"val_fold and test_fold must be two different folds 0-9, got {val_fold}, {test_fold}"
            )
        unknown = sorted(set(views or ()) - set(PEDIATRIC_VIEWS))
        if unknown:
            raise ValueError(f"unknown EchoNet-Pediatric views {unknown}; known: {list(PEDIATRIC_VIEWS)}")
        present = [v for v in PEDIATRIC_VIEWS if (root / v).is_dir()]
        wanted = list(views) if views else present
        if not present:
            raise DataError(f"{root}: not an EchoNet-Pediatric folder (no A4C/ or PSAX/ folder)")
        missing = [f"{v}/" for v in wanted if v not in present]
        for view in [v for v in wanted if v in present]:
            if not (root / view / "FileList.csv").is_file():
                missing.append(f"{view}/FileList.csv")
            if not (root / view / "Videos").is_dir():
                missing.append(f"{view}/Videos/")
        if missing:
            raise DataError(
                f"{root}: EchoNet-Pediatric folder lacks {', '.join(missing)} "
                "(each view folder, A4C/ and PSAX/, holds FileList.csv, VolumeTracings.csv and Videos/)"
            )
        parts = [self._view_table(root, view) for view in wanted]
        table = pd.concat(parts, ignore_index=True)
        held_out = {val_fold: "val", test_fold: "test"}
        table["split"] = [held_out.get(int(f), "train") for f in table["fold"]]
        if not _wants_all(split):
            table = _select_folds(table, split, root)
        self.val_fold, self.test_fold = val_fold, test_fold
        self._set_table(root, table, ["ef", "age", "weight", "height"], transform, clip, seed, read_options)

    @staticmethod
    def _view_table(root: Path, view: str) -> Any:
        import pandas as pd

        path = root / view / "FileList.csv"
        listed = _read_csv(path, ("FileName", "EF", "Split"), text=("FileName", "Sex"))
        folds = pd.to_numeric(listed["Split"], errors="coerce")
        bad = ~folds.isin(range(10))
        if bad.any():
            shown = sorted({str(v) for v in listed.loc[bad, "Split"]})[:5]
            raise DataError(f"{path}: Split must be a fold 0-9; {int(bad.sum())} rows hold {shown}")
        stems = listed["FileName"].astype(str).str.replace(r"\.avi$", "", regex=True, case=False)
        return pd.DataFrame(
            {
                "video_path": f"{view}/Videos/" + stems + ".avi",
                "study_id": stems,
                "patient_id": stems,
                "view": view,
                "ef": _numbers(listed, "EF"),
                "age": _numbers(listed, "Age"),
                "weight": _numbers(listed, "Weight"),
                "height": _numbers(listed, "Height"),
                "sex": listed["Sex"].fillna("").astype(str) if "Sex" in listed.columns else "",
                "fold": folds.astype(int),
            }
        )


def _select_folds(table: Any, split: str | Sequence[str], root: Path) -> Any:
    """Rows of the named splits and folds (``"fold3"``, ``"3"``); a DataError if none."""
    names = [split] if isinstance(split, str) else list(split)
    folds, splits = set(), set()
    for name in (str(n).strip().lower() for n in names):
        match = re.fullmatch(r"(?:fold)?(\d)", name)
        if match:
            folds.add(int(match.group(1)))
        else:
            splits.add(name)
    keep = table["split"].isin(splits) | table["fold"].isin(folds)
    if not keep.any():
        raise DataError(
            f"{root}: no videos in split {names}; splits present: {sorted(set(table['split']))}, "
            f"folds present: {sorted(set(int(f) for f in table['fold']))}"
        )
    return table[keep].copy()


# ---------------------------------------------------------------------------------------
# EchoNet-LVH


class EchoNetLVH(_PublicDataset):
    """EchoNet-LVH: parasternal long-axis videos and their linear measurements.

    ``MeasurementsList.csv`` has one row per measurement: ``HashedFileName`` (the video),
    ``Calc`` (``IVSd``, ``LVIDd``, ``LVIDs``, ``LVPWd``), ``CalcValue`` in centimetres, the
    frame and caliper end points (``Frame``, ``X1``, ``X2``, ``Y1``, ``Y2``), the video's
    ``Frames``, ``FPS``, ``Width``, ``Height`` and its ``split`` (train/val/test). The
    videos, ``<HashedFileName>.avi``, are spread over ``Batch1/`` ... ``Batch4/``; the list
    does not say which, so the batch folders are listed once.

    One item per video; its measurements are ``labels``: ``ivsd_cm``, ``lvidd_cm``,
    ``lvids_cm``, ``lvpwd_cm`` (NaN where not measured; the mean where measured twice)
    and any other ``Calc`` the list holds, as ``<calc>_cm``. ``ef`` is unknown (NaN).
    ``table`` adds ``view`` (``"PLAX"``). A listed video found in no batch folder is
    kept and reported as unreadable when read, never dropped unseen.

    Args:
        root: the folder holding ``MeasurementsList.csv`` and the batch folders.
        split: ``"train"``, ``"val"``, ``"test"`` (the ``split`` column), a list, or ``"all"``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | Sequence[str] | None = "train",
        transform: Callable[..., Any] | None = None,
        *,
        clip: ClipSampler | None = None,
        seed: int | None = None,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        import pandas as pd

        root = Path(root)
        path = root / "MeasurementsList.csv"
        batches = _batch_folders(root)
        missing = (["MeasurementsList.csv"] if not path.is_file() else []) + (
            ["Batch1/ ... Batch4/ (the videos)"] if not batches else []
        )
        if missing:
            raise DataError(f"{root}: EchoNet-LVH folder lacks {', '.join(missing)}")
        rows = _read_csv(
            path, ("HashedFileName", "Calc", "CalcValue", "split"), text=("HashedFileName", "Calc")
        )
        rows["name"] = rows["HashedFileName"].astype(str).str.replace(r"\.avi$", "", regex=True, case=False)
        rows["value"] = _numbers(rows, "CalcValue")
        names = list(dict.fromkeys(rows["name"]))
        values = rows.pivot_table(index="name", columns="Calc", values="value", aggfunc="mean")
        calcs = list(LVH_MEASUREMENTS) + sorted(set(map(str, values.columns)) - set(LVH_MEASUREMENTS))
        first = rows.groupby("name", sort=False).first()
        located = _locate_videos(batches, root)
        table = pd.DataFrame(
            {
                "video_path": [located.get(n, f"{n}.avi") for n in names],
                "study_id": names,
                "patient_id": names,
                "view": "PLAX",
                "split": first.loc[names, "split"].astype(str).str.lower().to_numpy(),
                "ef": np.nan,
            }
        )
        for calc in calcs:
            column = values[calc] if calc in values.columns else pd.Series(dtype=float)
            table[f"{calc.lower()}_cm"] = column.reindex(names).to_numpy(dtype=float)
        for source, column in (
            ("FPS", "fps"),
            ("Frames", "frames"),
            ("Width", "width"),
            ("Height", "height"),
        ):
            if source in first.columns:
                table[column] = pd.to_numeric(first.loc[names, source], errors="coerce").to_numpy()
        absent = sum(n not in located for n in names)
        if absent:
            log.warning(
                "%s: %d of %d videos of MeasurementsList.csv are in no batch folder; they will be "
                "reported as unreadable",
                root,
                absent,
                len(names),
            )
        if not _wants_all(split):
            table = _select_split(table, split, path)
        labels = [f"{c.lower()}_cm" for c in calcs]
        self._set_table(root, table, labels, transform, clip, seed, read_options)


def _batch_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Batch\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _locate_videos(batches: Sequence[Path], root: Path) -> dict[str, str]:
    """Video stem -> its path relative to ``root``, from one listing of each batch folder."""
    located: dict[str, str] = {}
    for batch in batches:
        with os.scandir(batch) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.rpartition(".")
                if dot and ext.lower() == "avi":
                    located.setdefault(stem, f"{batch.relative_to(root)}/{entry.name}")
    return located


# ---------------------------------------------------------------------------------------
# CAMUS


class CAMUS(_PublicDataset):
    """CAMUS: apical two- and four-chamber half cycles (ED to ES) as NIfTI, 500 patients.

    ``database_nifti/patientXXXX/`` holds ``patientXXXX_{2CH,4CH}_half_sequence.nii.gz``
    (with ``_gt`` masks) and ``Info_2CH.cfg``/``Info_4CH.cfg``, lines ``key: value``: ED,
    ES, NbFrame, Sex, Age, ImageQuality, EF, FrameRate. The optional
    ``database_split/subgroup_{training,validation,testing}.txt`` list the patients of
    each split (one patient folder name per line); without them only ``split="all"`` is
    known.

    One item per patient and view; the study (and patient) id is the patient folder.
    ``labels`` are ``ef`` and ``age``; ``table`` adds ``view`` (``"A2C"``/``"A4C"``),
    ``sex``, ``image_quality``, ``frame_rate``, ``nb_frames`` and ``ed_frame``/``es_frame``
    (0-based; the files count from 1). Each cine is read at its ``FrameRate`` and with the
    scale of its NIfTI header (millimetres, as CAMUS documents; see
    :func:`~echoclip.data.nifti.read_nifti`), so items carry a known ``cm_per_px``.

    Args:
        root: the CAMUS folder (holding ``database_nifti/``), or ``database_nifti`` itself.
        split: ``"train"``, ``"val"``, ``"test"``, a list, or ``"all"``.
        views: ``"2CH"`` and/or ``"4CH"`` (default both).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | Sequence[str] | None = "train",
        transform: Callable[..., Any] | None = None,
        *,
        views: Sequence[str] = ("2CH", "4CH"),
        clip: ClipSampler | None = None,
        seed: int | None = None,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        import pandas as pd

        root = Path(root)
        unknown = sorted(set(views) - set(CAMUS_VIEWS))
        if unknown:
            raise ValueError(f"unknown CAMUS views {unknown}; known: {list(CAMUS_VIEWS)}")
        nifti = root / "database_nifti" if (root / "database_nifti").is_dir() else root
        if not nifti.is_dir() or (nifti == root and (root / "database_split").is_dir()):
            raise DataError(f"{root}: CAMUS folder lacks database_nifti/ (the patient folders)")
        rows = []
        for patient in sorted(p for p in nifti.iterdir() if p.is_dir()):
            for tag in views:
                cfg = patient / f"Info_{tag}.cfg"
                if cfg.is_file():
                    rows.append(_camus_row(root, patient, tag, _read_cfg(cfg)))
        if not rows:
            raise DataError(
                f"{nifti}: no patient folder holds Info_2CH.cfg or Info_4CH.cfg; CAMUS keeps "
                "database_nifti/patientXXXX/Info_{2CH,4CH}.cfg beside "
                "patientXXXX_{2CH,4CH}_half_sequence.nii.gz"
            )
        table = pd.DataFrame(rows)
        splits = _camus_splits(root)
        if splits is not None:
            table["split"] = [splits.get(p, "unlisted") for p in table["patient_id"]]
        if not _wants_all(split):
            if splits is None:
                raise DataError(
                    f"{root}: split {split!r} requested but there is no database_split/"
                    "subgroup_{training,validation,testing}.txt; use split 'all'"
                )
            table = _select_split(table, split, root / "database_split")
        self._set_table(root, table, ["ef", "age"], transform, clip, seed, read_options)
        self._frame_rates = {
            str(self.video_path(i)): float(r) for i, r in enumerate(self.table["frame_rate"]) if r > 0
        }

    def file_options(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The dataset's ``read_options``, CAMUS' millimetres, and the frame rate its ``Info`` file records."""
        options: dict[str, Any] = {"units": "mm", **self.read_options}
        rate = self._frame_rates.get(str(path))
        if rate is not None:
            options["fps"] = rate
        return options


def _read_cfg(path: Path) -> dict[str, str]:
    """``key: value`` lines of a CAMUS ``Info_*.cfg``."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _camus_row(root: Path, patient: Path, tag: str, cfg: dict[str, str]) -> dict[str, Any]:
    ed, es = _number(cfg.get("ED")), _number(cfg.get("ES"))
    sequence = patient / f"{patient.name}_{tag}_half_sequence.nii.gz"
    return {
        "video_path": str(sequence.relative_to(root)),
        "study_id": patient.name,
        "patient_id": patient.name,
        "view": CAMUS_VIEWS[tag],
        "ef": _number(cfg.get("EF")),
        "age": _number(cfg.get("Age")),
        "sex": cfg.get("Sex", ""),
        "image_quality": cfg.get("ImageQuality", ""),
        "frame_rate": _number(cfg.get("FrameRate")),
        "nb_frames": _number(cfg.get("NbFrame")),
        "ed_frame": ed - 1,
        "es_frame": es - 1,
    }


def _camus_splits(root: Path) -> dict[str, str] | None:
    """Patient folder -> split, from ``database_split``; None when no split file is there."""
    folder = root / "database_split"
    found = {s: folder / n for s, n in CAMUS_SPLIT_FILES.items() if (folder / n).is_file()}
    if not found:
        return None
    splits: dict[str, str] = {}
    for split, path in found.items():
        for token in path.read_text(encoding="utf-8", errors="replace").split():
            name = f"patient{int(token):04d}" if token.isdigit() else token.strip(",;")
            splits.setdefault(name, split)
    return splits


# ---------------------------------------------------------------------------------------
# TMED-2


class TMED2(_PublicDataset):
    """TMED-2: still PNG frames of echo studies with view and aortic-stenosis labels.

    A labels CSV lists the images: ``query_key`` (the file name, ``<patient>s<study>_<n>.png``),
    ``view_label`` (PLAX, PSAX, A4C, A2C, A4CorA2CorOther), ``diagnosis_label`` (no_AS,
    mild_AS, mildtomod_AS, moderate_AS, severe_AS, or Not_Provided for view-only
    images), ``SourceFolder`` (the image's folder under the root) and the suggested
    splits ``diagnosis_classifier_split`` and ``view_classifier_split`` (train, val,
    test, unlabeled). The release ships such CSVs per labelled budget and fold
    (``DEV479/TMED2_fold0_labeledpart.csv``, ...) and ``labels_per_image.csv``.

    Each image is a video of one frame (see :mod:`echoclip.data.images`). ``labels``:
    ``as_severity`` (0 no AS ... 4 severe, TMED's five classes; NaN when not provided)
    and ``finding_aortic_stenosis`` (any AS: 1, none: 0). ``table`` adds ``view`` and
    ``diagnosis`` as the CSV names them. The study id is the part of ``query_key``
    before ``_``, the patient id the part before ``s``.

    Args:
        root: the release folder (the one holding the ``DEV*`` folders and image folders).
        split: ``"train"``, ``"val"``, ``"test"``, a list, or ``"all"``.
        labels_file: the CSV to read, relative to ``root`` (default ``DEV479/TMED2_fold0_labeledpart.csv``,
            else the first ``DEV*/TMED2_fold*_labeledpart.csv``, else ``labels_per_image.csv``).
        split_by: ``"diagnosis"`` or ``"view"``: which suggested split column to use.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | Sequence[str] | None = "train",
        transform: Callable[..., Any] | None = None,
        *,
        labels_file: str | os.PathLike[str] | None = None,
        split_by: str = "diagnosis",
        clip: ClipSampler | None = None,
        seed: int | None = None,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        import pandas as pd

        root = Path(root)
        if split_by not in ("diagnosis", "view"):
            raise ValueError(f"split_by must be 'diagnosis' or 'view', got {split_by!r}")
        path = root / labels_file if labels_file is not None else _tmed_labels_file(root)
        if path is None or not path.is_file():
            raise DataError(
                f"{root}: TMED-2 folder lacks its labels CSV "
                f"({labels_file or TMED_DEFAULT_LABELS}, another DEV*/TMED2_fold*_labeledpart.csv, "
                "or labels_per_image.csv)"
            )
        text = ("query_key", "view_label", "diagnosis_label", "SourceFolder")
        rows = _read_csv(path, ("query_key", "view_label", "diagnosis_label"), text=text)
        keys = rows["query_key"].astype(str)
        if "SourceFolder" in rows.columns:
            folders = rows["SourceFolder"].fillna("").astype(str).str.strip("/")
            paths = [f"{f}/{k}" if f else k for f, k in zip(folders, keys, strict=True)]
        else:
            found = {p.name: str(p.relative_to(root)) for p in root.rglob("*.png")}
            paths = [found.get(k, k) for k in keys]
        ids = keys.str.extract(r"^(?P<patient>[^_]+?)s\d+_", expand=True)["patient"]
        studies = keys.str.replace(r"_[^_]*$", "", regex=True)
        diagnosis = rows["diagnosis_label"].fillna("").astype(str)
        severity = diagnosis.map(TMED_SEVERITY).astype(float)
        table = pd.DataFrame(
            {
                "video_path": paths,
                "study_id": studies,
                "patient_id": ids.fillna(studies),
                "view": rows["view_label"].fillna("").astype(str),
                "diagnosis": diagnosis,
                "ef": np.nan,
                "as_severity": severity,
                "finding_aortic_stenosis": np.where(severity.isna(), np.nan, (severity > 0).astype(float)),
            }
        )
        column = f"{split_by}_classifier_split"
        if column in rows.columns:
            table["split"] = rows[column].fillna("").astype(str).str.lower()
        if not _wants_all(split):
            if "split" not in table.columns:
                raise DataError(f"{path}: split {split!r} requested but the table has no {column} column")
            table = _select_split(table, split, path)
        self.labels_file = path
        self._set_table(
            root, table, ["as_severity", "finding_aortic_stenosis"], transform, clip, seed, read_options
        )


def _tmed_labels_file(root: Path) -> Path | None:
    default = root / TMED_DEFAULT_LABELS
    if default.is_file():
        return default
    folds = sorted(root.glob("DEV*/TMED2_fold*_labeledpart.csv"))
    if folds:
        return folds[0]
    per_image = root / "labels_per_image.csv"
    return per_image if per_image.is_file() else None


# ---------------------------------------------------------------------------------------
# layouts: what open_dataset recognises


def _is_pediatric(path: Path) -> bool:
    return any((path / v).is_dir() for v in PEDIATRIC_VIEWS)


def _is_lvh(path: Path) -> bool:
    return (path / "MeasurementsList.csv").is_file() or bool(_batch_folders(path))


def _is_camus(path: Path) -> bool:
    return (path / "database_nifti").is_dir() or (path / "database_split").is_dir()


def _is_tmed2(path: Path) -> bool:
    return (path / "labels_per_image.csv").is_file() or any(path.glob("DEV*/TMED2_fold*_labeledpart.csv"))


@register_layout(
    "EchoNet-Pediatric",
    _is_pediatric,
    "A4C/ and/or PSAX/, each with FileList.csv, VolumeTracings.csv, Videos/",
)
def _open_pediatric(path: Path, split: Any, transform: Any, read_options: dict[str, Any] | None) -> Any:
    return EchoNetPediatric(path, split or "all", transform, read_options=read_options)


@register_layout("EchoNet-LVH", _is_lvh, "MeasurementsList.csv and Batch1/ ... Batch4/")
def _open_lvh(path: Path, split: Any, transform: Any, read_options: dict[str, Any] | None) -> Any:
    return EchoNetLVH(path, split or "all", transform, read_options=read_options)


@register_layout(
    "CAMUS", _is_camus, "database_nifti/patientXXXX/ with Info_{2CH,4CH}.cfg and *_half_sequence.nii.gz"
)
def _open_camus(path: Path, split: Any, transform: Any, read_options: dict[str, Any] | None) -> Any:
    return CAMUS(path, split or "all", transform, read_options=read_options)


@register_layout(
    "TMED-2", _is_tmed2, "DEV*/TMED2_fold*_labeledpart.csv or labels_per_image.csv, and PNG folders"
)
def _open_tmed2(path: Path, split: Any, transform: Any, read_options: dict[str, Any] | None) -> Any:
    return TMED2(path, split or "all", transform, read_options=read_options)
