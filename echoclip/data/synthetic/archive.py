"""A simulated hospital DICOM export: what ``echoclip ingest`` is built to read.

Layout::

    out/
      dicom/<patient folder>/<study folder>/<series>/IM<k>.dcm   the archive (ROOT)
      reports.csv        accession_number, report: some studies have none, some
                         reports are for studies that are not in the archive
      truth.csv          one row per file under dicom/: path, kind, study, the
                         accession number, whether ingest should keep it, and the
                         study's measurements (for tests: it holds the identifiers)

Each study is a patient's visit from :func:`~echoclip.data.synthetic.plan_cohort`: B-mode
cines of several views, a colour Doppler cine, a still, a pulsed-wave Doppler strip, a
structured report (TID 5200-style) holding the measurements, and a secondary capture
with the patient's name burnt in. Headers follow one of a few vendors' habits
(transfer syntax, photometric interpretation, timing element), and the folder names
carry the patient's name and the accession number, as real exports do. A few corrupt
and non-DICOM files are scattered in; ``distractors`` and ``corrupt`` set how many at
least (as fractions of the archive's files), ``stills`` how many stills a study has.
Identifiers are unique strings (``ZQX...``) so a test can look for them in every output.

``truth.csv`` kinds: ``bmode_cine``, ``color_cine``, ``still``, ``spectral_doppler``,
``sr``, ``secondary_capture``; the distractors ``junk`` (not DICOM, or DICOM garbage)
and ``other_modality`` (a CT image of the patient's); the corrupt ``truncated`` (a cine
cut short in its pixel data) and ``corrupt`` (an image cut short in its header).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoclip import atomic
from echoclip.data.synthetic.anatomy import VIEWS
from echoclip.data.synthetic.cohort import plan_cohort, report_rng, study_state
from echoclip.data.synthetic.reports import write_report
from echoclip.data.synthetic.study import render_study
from echoclip.errors import DataError

__all__ = ["simulate_archive", "SR_MEASUREMENTS", "ARCHIVE_VENDORS"]

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"

# SR measurements: LOINC code -> (code meaning, UCUM unit, truth attribute of the cardiac state)
SR_MEASUREMENTS: dict[str, tuple[str, str, str]] = {
    "10230-1": ("Left Ventricular Ejection Fraction", "%", "ef"),
    "29436-3": ("Left Ventricle Internal End Diastolic Dimension", "mm", "lvidd"),
    "18154-2": ("Interventricular Septum Diastolic Thickness", "mm", "wall_cm"),
    "18026-2": ("Left Ventricular End Diastolic Volume", "ml", "edv"),
    "18148-4": ("Left Ventricular End Systolic Volume", "ml", "esv"),
}

# vendor habits: (Manufacturer, model, compression, photometric of uncompressed data, timing element)
ARCHIVE_VENDORS: tuple[tuple[str, str, str | None, str, str], ...] = (
    ("GE Vingmed Ultrasound", "Vivid E95", "jpeg", "RGB", "FrameTime"),
    ("Philips Medical Systems", "EPIQ 7C", "rle", "RGB", "RecommendedDisplayFrameRate"),
    ("SIEMENS", "ACUSON SC2000", None, "YBR_FULL", "CineRate"),
)
_BANNER = 16  # rows of burnt-in text above the image region
_MARGIN = 4


@dataclass(frozen=True)
class _Ids:
    patient_name: str
    patient_id: str
    birth_date: str
    accession: str
    burnt_in: str
    study_uid: str


def simulate_archive(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    size: int = 64,
    frames: int = 16,
    fps: float = 25.0,
    views: tuple[str, ...] = ("A4C", "PLAX"),
    missing_reports: float = 0.15,
    orphan_reports: int = 2,
    overwrite: bool = False,
    stills: int = 1,
    distractors: float = 0.0,
    corrupt: float = 0.0,
) -> Path:
    """Write a simulated DICOM export of ``n`` studies under ``out_dir`` (atomically).

    Returns the folder; the archive is ``out_dir/dicom``, the reports
    ``out_dir/reports.csv``. ``missing_reports`` of the studies get no report;
    ``orphan_reports`` reports name accession numbers that are in no study.
    ``stills``: single-frame images per study. ``distractors``: at least this fraction
    of the files are not echo instances (notes, thumbnails, PDFs, CT images); ``corrupt``:
    at least this fraction are damaged DICOM files (cines cut in their pixel data,
    images cut in their header). The few of each every archive has count towards both.
    The same arguments give the same files.
    """
    import pandas as pd

    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise DataError(f"unknown or no views {bad or list(views)}; known: {', '.join(VIEWS)}")
    if stills < 0 or not (0 <= distractors < 1 and 0 <= corrupt < 1):
        raise DataError(
            f"stills must be >= 0 and distractors, corrupt fractions in [0, 1); got {stills}, "
            f"{distractors}, {corrupt}"
        )
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (choose another folder or overwrite it)")
    rng = np.random.default_rng([seed, 5200])
    truth: list[dict[str, Any]] = []
    reports: list[dict[str, str]] = []
    patients: dict[int, Any] = {}
    patient_ids: dict[int, _Ids] = {}
    with atomic.writing_dir(out) as tmp:
        root = tmp / "dicom"
        for plan in plan_cohort(n, seed):
            state = study_state(plan, patients)
            report = write_report(state, report_rng(plan.study_seed))
            person = patient_ids.setdefault(plan.patient_seed, _person(len(patient_ids), seed, rng))
            ids = _Ids(
                person.patient_name,
                person.patient_id,
                person.birth_date,
                f"ZQXACC{seed % 1000:03d}{plan.index:05d}",
                f"ZQXBURNT{seed % 1000:03d}{plan.index:05d}",
                _uid(seed, plan.index),
            )
            vendor = ARCHIVE_VENDORS[plan.index % len(ARCHIVE_VENDORS)]
            folder = root / f"{person.patient_name.replace('^', '_')}" / f"ACC_{ids.accession}"
            rows = _write_study(folder, state, report, plan, ids, vendor, size, frames, fps, views, stills)
            truth += [{**r, "path": str(Path(r["path"]).relative_to(root))} for r in rows]
            if rng.random() >= missing_reports:
                reports.append({"accession_number": ids.accession, "report": report})
        for k in range(orphan_reports):
            reports.append({"accession_number": f"ZQXACCORPHAN{k}", "report": "NO STUDY FOR THIS REPORT."})
        junk, truncated = _write_junk(root)
        for row in truth:
            if row["path"] == truncated:
                row["keep"], row["kind"] = False, "truncated"
        truth += junk
        if distractors or corrupt:
            truth = _add_damage(root, truth, distractors, corrupt, np.random.default_rng([seed, 11]))
        order = np.random.default_rng([seed, 7]).permutation(len(reports))  # not in study order
        pd.DataFrame([reports[i] for i in order]).to_csv(tmp / "reports.csv", index=False)
        pd.DataFrame(truth).to_csv(tmp / "truth.csv", index=False)
    return out


def _person(k: int, seed: int, rng: np.random.Generator) -> _Ids:
    year, month, day = int(rng.integers(1930, 2000)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return _Ids(
        f"ZQXDOE{seed % 1000:03d}{k:04d}^ZQXJANE{k:04d}",
        f"ZQXMRN{seed % 1000:03d}{k:06d}",
        f"{year:04d}{month:02d}{day:02d}",
        "",
        "",
        "",
    )


def _uid(seed: int, *parts: int) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["echoclip-archive", str(seed), *map(str, parts)]))


def _write_study(
    folder: Path,
    state: Any,
    report: str,
    plan: Any,
    ids: _Ids,
    vendor: tuple[str, str, str | None, str, str],
    size: int,
    frames: int,
    fps: float,
    views: tuple[str, ...],
    stills: int = 1,
) -> list[dict[str, Any]]:
    from echoclip.data.dicom import write_dicom

    manufacturer, model, compression, photometric, timing = vendor
    measurements = {code: float(getattr(state, attr)) for code, (_, _, attr) in SR_MEASUREMENTS.items()}
    common = {
        "PatientName": ids.patient_name,
        "PatientID": ids.patient_id,
        "PatientBirthDate": ids.birth_date,
        "AccessionNumber": ids.accession,
        "StudyInstanceUID": ids.study_uid,
        "StudyDate": "20240102",
        "StudyTime": "101500",
        "StudyID": f"ZQXSTUDY{plan.index:05d}",
        "InstitutionName": "ZQX GENERAL HOSPITAL",
        "Manufacturer": manufacturer,
        "ManufacturerModelName": model,
    }
    rows: list[dict[str, Any]] = []
    base = {
        "study_uid": ids.study_uid,
        "accession": ids.accession,
        "patient_name": ids.patient_name,
        "patient_id": ids.patient_id,
        "birth_date": ids.birth_date,
        "burnt_in": ids.burnt_in,
        **{SR_MEASUREMENTS[c][2]: v for c, v in measurements.items()},
    }
    series = 0

    def instance(
        kind: str, keep: bool, video: np.ndarray, regions: list[dict[str, Any]] | None, **kw: Any
    ) -> None:
        nonlocal series
        series += 1
        tags = {
            **common,
            "SeriesInstanceUID": _uid(plan.index, 1000 + series),
            "SOPInstanceUID": _uid(plan.index, 2000 + series),
            "SeriesNumber": series,
            "InstanceNumber": 1,
            **kw.pop("tags", {}),
        }
        path = folder / f"S{series:03d}" / f"IM{series:04d}.dcm"
        comp = kw.pop("compression", compression)
        write_dicom(
            video,
            path,
            fps if video.shape[0] > 1 else None,
            photometric=photometric if comp is None else "RGB",
            compression=comp,
            regions=regions,
            tags=tags,
        )
        if video.shape[0] > 1 and timing != "FrameTime":
            _keep_only_timing(path, timing, fps)
        rows.append(
            {**base, "path": str(path), "kind": kind, "keep": keep, "sop_uid": tags["SOPInstanceUID"]}
        )

    cine_region = None
    for view in views:
        study = render_study(state, report, plan.study_seed, view, size, frames, fps)
        canvas, cine_region = _on_canvas(study.video.frames, study.truth.cm_per_px, ids.patient_name)
        instance("bmode_cine", True, canvas, [cine_region])
        if view == views[0]:
            colour = _with_colour(canvas, cine_region, plan.study_seed)
            box = _inner_box(cine_region)
            instance("color_cine", True, colour, [cine_region, {**box, "data_type": 2}])
            for k in range(stills):  # stills of the loop's frames, one after another
                frame = canvas[k % len(canvas)][None]
                instance(
                    "still", False, frame, [cine_region], tags={"SOPClassUID": US_IMAGE, "NumberOfFrames": 1}
                )
            strip, strip_regions = _doppler_strip(canvas[0], cine_region, plan.study_seed)
            instance("spectral_doppler", False, strip[None], strip_regions, tags={"SOPClassUID": US_IMAGE})
            instance(
                "secondary_capture",
                False,
                _screenshot(canvas[0], f"{ids.patient_name} {ids.burnt_in}")[None],
                None,
                compression=None,
                tags={"SOPClassUID": SECONDARY_CAPTURE, "Modality": "OT", "ConversionType": "WSD"},
            )
    series += 1
    sr_path = folder / f"S{series:03d}" / f"SR{series:04d}.dcm"
    _write_sr(
        sr_path,
        {**common, "SeriesNumber": series, "InstanceNumber": 1},
        measurements,
        _uid(plan.index, 1000 + series),
        _uid(plan.index, 2000 + series),
    )
    rows.append({**base, "path": str(sr_path), "kind": "sr", "keep": True, "sop_uid": ""})
    return rows


def _keep_only_timing(path: Path, keyword: str, fps: float) -> None:
    """Rewrite a cine's timing as a vendor does: one element, not FrameTime."""
    import pydicom

    ds = pydicom.dcmread(path)
    for old in ("FrameTime", "CineRate", "FrameIncrementPointer"):
        if old in ds:
            del ds[old]
    setattr(ds, keyword, int(round(fps)))
    with atomic.writing(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _on_canvas(frames: np.ndarray, cm_per_px: float, banner: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The image in a larger frame, with the patient's name burnt into a banner above it."""
    t, h, w, _ = frames.shape
    canvas = np.zeros((t, h + _BANNER + _MARGIN, w + 2 * _MARGIN, 3), np.uint8)
    canvas[:, _BANNER : _BANNER + h, _MARGIN : _MARGIN + w] = frames
    text = _text_image(banner, canvas.shape[2], _BANNER - 2)
    canvas[:, 1 : _BANNER - 1] = np.maximum(canvas[:, 1 : _BANNER - 1], text[None])
    region = {
        "x0": _MARGIN,
        "y0": _BANNER,
        "x1": _MARGIN + w - 1,
        "y1": _BANNER + h - 1,
        "delta_x": cm_per_px,
        "delta_y": cm_per_px,
    }
    return canvas, region


def _text_image(text: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    ImageDraw.Draw(image).text((1, 0), text, fill=(230, 230, 230))
    return np.asarray(image)


def _inner_box(region: dict[str, Any]) -> dict[str, Any]:
    w, h = region["x1"] - region["x0"], region["y1"] - region["y0"]
    return {
        "x0": region["x0"] + w // 3,
        "y0": region["y0"] + h // 4,
        "x1": region["x0"] + 2 * w // 3,
        "y1": region["y0"] + 3 * h // 4,
        "delta_x": region["delta_x"],
        "delta_y": region["delta_y"],
    }


def _with_colour(canvas: np.ndarray, region: dict[str, Any], seed: int) -> np.ndarray:
    """Colour flow in the box of the colour region: red and blue patches that change per frame."""
    box = _inner_box(region)
    out = canvas.copy()
    rng = np.random.default_rng([seed, 2])
    t = out.shape[0]
    sub = out[:, box["y0"] : box["y1"], box["x0"] : box["x1"]]
    flow = rng.random((t, *sub.shape[1:3]))
    sub[flow > 0.7] = (220, 30, 30)
    sub[flow < 0.2] = (30, 60, 220)
    return out


def _doppler_strip(
    frame: np.ndarray, region: dict[str, Any], seed: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A PW Doppler display: a small 2-D image above a spectral trace (region type 3)."""
    h, w, _ = frame.shape
    strip = np.zeros_like(frame)
    top = h // 3
    strip[:top] = frame[::3][:top]
    x = np.arange(w)
    rng = np.random.default_rng([seed, 3])
    envelope = (top + 4 + (h - top - 8) * (0.5 + 0.4 * np.abs(np.sin(x / 6.0)))).astype(int)
    for col in range(w):
        strip[top + 4 : envelope[col], col] = int(rng.integers(120, 255))
    regions = [
        {
            "x0": 0,
            "y0": 0,
            "x1": w - 1,
            "y1": top - 1,
            "delta_x": region["delta_x"],
            "delta_y": region["delta_y"],
        },
        {
            "x0": 0,
            "y0": top,
            "x1": w - 1,
            "y1": h - 1,
            "spatial_format": 3,
            "data_type": 3,
            "units_x": 4,
            "units_y": 7,
            "delta_x": 0.01,
            "delta_y": 2.0,
        },
    ]
    return strip, regions


def _screenshot(frame: np.ndarray, text: str) -> np.ndarray:
    """A report-page screenshot: the image and the patient's details burnt in."""
    h, w, _ = frame.shape
    shot = np.zeros((h + 24, max(w, 160), 3), np.uint8)
    shot[24:, :w] = frame
    shot[:20] = _text_image(text, shot.shape[1], 20)
    return shot


def _write_sr(
    path: Path, tags: dict[str, Any], measurements: dict[str, float], series_uid: str, sop_uid: str
) -> None:
    """A Comprehensive SR in the shape of TID 5200: a container per section, NUM items by LOINC code."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    def code(value: str, scheme: str, meaning: str) -> Any:
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        return item

    def num(code_value: str, value: float) -> Any:
        meaning, unit, _ = SR_MEASUREMENTS[code_value]
        shown = value * 10.0 if unit == "mm" else value  # lengths as scanners store them
        measured = pydicom.Dataset()
        measured.NumericValue = f"{shown:.2f}"
        measured.MeasurementUnitsCodeSequence = [code(unit, "UCUM", unit)]
        item = pydicom.Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "NUM"
        item.ConceptNameCodeSequence = [code(code_value, "LN", meaning)]
        item.MeasuredValueSequence = [measured]
        return item

    section = pydicom.Dataset()
    section.RelationshipType, section.ValueType, section.ContinuityOfContent = (
        "CONTAINS",
        "CONTAINER",
        "SEPARATE",
    )
    section.ConceptNameCodeSequence = [code("29468-6", "LN", "Left Ventricle")]
    section.ContentSequence = [num(c, v) for c, v in measurements.items()]

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = COMPREHENSIVE_SR
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = COMPREHENSIVE_SR, sop_uid, series_uid
    ds.Modality = "SR"
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.ContentDate, ds.ContentTime = tags.get("StudyDate", ""), "103000"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [code("125200", "DCM", "Adult Echocardiography Procedure Report")]
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentSequence = [section]
    with atomic.writing(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


_DISTRACTOR_NAMES = {"ct": "CT0001.dcm", "note": "NOTES.TXT", "thumbnail": "THUMB.JPG", "pdf": "DOC.PDF"}


def _add_damage(
    root: Path, truth: list[dict[str, Any]], distractors: float, corrupt: float, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Add distractor files and damage study files until each is at least its fraction of the archive."""
    from echoclip.data.dicom import write_dicom

    not_echo = {"junk", "other_modality"}
    have = sum(r["kind"] in not_echo for r in truth) - 1  # BROKEN.dcm is junk but corrupt
    needed = int(np.ceil((distractors * len(truth) - have) / (1 - distractors))) if distractors else 0
    studies = sorted({Path(r["path"]).parent.parent for r in truth if r.get("study_uid")})
    people = {Path(r["path"]).parent.parent: r for r in truth if r.get("study_uid")}
    added: list[dict[str, Any]] = []
    for k in range(max(needed, 0)):
        folder = studies[int(rng.integers(len(studies)))]
        kind = ("ct", "note", "thumbnail", "pdf")[k % 4]
        path = root / folder / f"EXTRA{k:05d}" / _DISTRACTOR_NAMES[kind]
        if kind == "ct":
            owner = people[folder]
            image = np.repeat(rng.integers(0, 255, (1, 16, 16, 1), dtype=np.uint8), 3, axis=-1)
            tags = {
                "PatientName": owner["patient_name"],
                "PatientID": owner["patient_id"],
                "PatientBirthDate": owner["birth_date"],
                "Modality": "CT",
                "SOPClassUID": CT_IMAGE,
                "StudyInstanceUID": _uid(int(rng.integers(1 << 30)), k),
            }
            write_dicom(image, path, None, photometric="MONOCHROME2", tags=tags)
            added.append({"path": str(path.relative_to(root)), "kind": "other_modality", "keep": False})
            continue
        data = {
            "note": b"Transferred by the archive; see the cover letter.\n",
            "thumbnail": b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 200, dtype=np.uint8)) + b"\xff\xd9",
            "pdf": b"%PDF-1.4\n%" + bytes(rng.integers(0, 255, 300, dtype=np.uint8)) + b"\n%%EOF\n",
        }[kind]
        atomic.write_bytes(path, data)
        added.append({"path": str(path.relative_to(root)), "kind": "junk", "keep": False})
    truth = truth + added

    broken = sum(r["kind"] in ("truncated", "corrupt") for r in truth) + 1  # and BROKEN.dcm
    wanted = int(np.ceil(corrupt * len(truth))) - broken
    images = [i for i, r in enumerate(truth) if r["kind"] in ("bmode_cine", "color_cine", "still")]
    for j, i in enumerate(rng.choice(images, size=min(max(wanted, 0), len(images)), replace=False)):
        row = truth[i]
        path = root / row["path"]
        data = path.read_bytes()
        if j % 2 == 0 and row["kind"] != "still":  # cut in the pixel data: the header reads
            atomic.write_bytes(path, data[: len(data) * 2 // 3])
            truth[i] = {**row, "kind": "truncated", "keep": False}
        else:  # cut in the header
            atomic.write_bytes(path, data[:300])
            truth[i] = {**row, "kind": "corrupt", "keep": False}
    return truth


def _write_junk(root: Path) -> tuple[list[dict[str, Any]], str]:
    """Files every export has: notes, thumbnails, a truncated DICOM, one that is not DICOM inside."""
    rows = []
    patients = sorted(p for p in root.iterdir() if p.is_dir())
    junk = {
        root / "README.TXT": b"Exported by the archive.\n",
        root / ".DS_Store": bytes(range(64)),
        patients[0] / "Thumbs.db": b"\x00" * 100,
        root / "BROKEN.dcm": b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage",
    }
    for path, data in junk.items():
        atomic.write_bytes(path, data)
        rows.append({"path": str(path.relative_to(root)), "kind": "junk", "keep": False})
    # a cine cut short in its pixel data, as an interrupted copy leaves it
    cines = sorted(patients[-1].rglob("IM*.dcm"))
    victim = cines[0]
    data = victim.read_bytes()
    atomic.write_bytes(victim, data[: len(data) * 2 // 3])
    return rows, str(victim.relative_to(root))
