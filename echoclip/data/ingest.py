"""From a hospital DICOM export and a reports table to a de-identified training manifest.

A hospital export is a tree of thousands of files: cines in B-mode and colour Doppler,
stills, spectral Doppler strips, structured reports holding the measurements,
screenshots with the patient's name burnt in, and files that are not DICOM at all.
The reports live in another system, keyed by accession number. :func:`ingest` reads
every header (never the pixels) to sort the files, groups them into studies, joins the
reports, reads the measurements of each study's SR, and converts each kept cine -
cropped to its ultrasound region and masked outside the sector, as
:func:`~echoclip.data.video.load_video` reads it - into a lossless AVI.

Output folder::

    manifest.parquet    one row per video: video_path, report, patient_id, study_id
                        (salted hashes), view ("unknown"), kind (bmode / color),
                        cm_per_px, fps, frames, split, and the SR's measurements
                        (ef, lvidd_cm, ivsd_cm, lvpwd_cm, edv, esv; NaN when absent)
    ingest_report.csv   every file not used: file (relative to the root, components
                        holding header values replaced), reason, key (a salted hash of
                        the path, which tells apart files shown alike)
    videos/<study>/<instance>.avi
    studies/<study>.json   the finished studies: a rerun skips them
    salt                the salt of the hashes, when none was given (keep it private)

Nothing identifying leaves the headers: no name, id, date, accession number or UID is
written, logged or raised; the ids are HMAC-SHA256 of the UIDs under the salt.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoclip import atomic
from echoclip.data.deid import SALT_ENV, identifying_labels, redact, redact_path, shown_path
from echoclip.errors import DataError, VideoReadError

__all__ = [
    "INSTANCE_KINDS",
    "SR_CODES",
    "IngestConfig",
    "IngestResult",
    "classify_instance",
    "ingest",
    "salted_id",
    "sr_measurements",
]

log = logging.getLogger(__name__)

INSTANCE_KINDS: tuple[str, ...] = (
    "bmode_cine",
    "color_cine",
    "spectral_doppler",
    "still",
    "sr",
    "secondary_capture",
    "other",
)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants .7.1 to .7.4
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_ULTRASOUND = ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1")
# RegionDataType (PS3.3 C.8.5.5.1.2): 2 colour flow; 3 PW, 4 CW spectral, 5-7 Doppler traces
_COLOUR_FLOW = {2}
_SPECTRAL = {3, 4, 5, 6, 7}
# RegionSpatialFormat: 2 M-mode, 3 spectral, 4 waveform
_NOT_2D = {2, 3, 4}

# SR measurements by LOINC code -> manifest column and the unit the column holds
SR_CODES: dict[str, tuple[str, str]] = {
    "10230-1": ("ef", "%"),  # LV ejection fraction
    "18043-0": ("ef", "%"),  # LV ejection fraction by US (some vendors)
    "29436-3": ("lvidd_cm", "cm"),  # LV internal dimension, end-diastole
    "18154-2": ("ivsd_cm", "cm"),  # interventricular septum thickness, diastole
    "18152-6": ("lvpwd_cm", "cm"),  # LV posterior wall thickness, diastole
    "18026-2": ("edv", "ml"),  # LV end-diastolic volume
    "18148-4": ("esv", "ml"),  # LV end-systolic volume
}
MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(c for c, _ in SR_CODES.values()))
# UCUM unit (lower case) and the column's unit -> factor
_TO_UNIT = {("mm", "cm"): 0.1, ("cm", "cm"): 1.0, ("m", "cm"): 100.0, ("ml", "ml"): 1.0}
_TO_UNIT.update({("cm3", "ml"): 1.0, ("l", "ml"): 1000.0, ("%", "%"): 1.0, ("1", "%"): 100.0})

_REASONS = {
    "still": "single-frame still image, not a cine",
    "spectral_doppler": "spectral Doppler or M-mode display, not a cine",
    "secondary_capture": "secondary capture (screenshot): no ultrasound region, may carry burnt-in text",
    "sr": "structured report without a known measurement",
}


@dataclass(frozen=True)
class IngestConfig:
    """How :func:`ingest` reads the export and the reports table.

    ``salt``: the secret of the id hashes (else ``ECHOCLIP_DEID_SALT``, else one drawn
    once and kept in the output folder). ``keep_no_region``: also keep cines without an
    ultrasound region (cropped to the detected sector); by default they are skipped,
    as screenshots often are. ``limit``: finish at most this many studies in this run
    (the rest on a rerun).
    """

    accession_column: str = "accession_number"
    report_column: str = "report"
    uid_column: str | None = None
    salt: str | None = None
    workers: int = 1
    keep_no_region: bool = False
    codec: str = "ffv1"
    limit: int | None = None
    progress: bool = True
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)


@dataclass
class IngestResult:
    """What a run did; ``complete`` is False when ``limit`` stopped it before the end."""

    out: Path
    complete: bool
    studies: int
    studies_done: int
    videos: int
    patients: int
    skipped: dict[str, int] = field(default_factory=dict)
    unmatched_reports: int = 0

    def summary(self) -> str:
        """One line: what was ingested, what was left out and why."""
        left = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        head = (
            f"ingested {self.videos} videos of {self.studies_done} studies ({self.patients} patients) into {self.out}"
            if self.complete
            else f"{self.studies_done} of {self.studies} studies done; rerun to resume ({self.out})"
        )
        return (
            f"{head}; {sum(self.skipped.values())} files not used"
            + (f" ({left})" if left else "")
            + f"; {self.unmatched_reports} reports match no study"
        )


@dataclass(frozen=True)
class _Instance:
    """One file's header facts. Holds identifiers in memory only; never written."""

    path: str
    shown: str
    kind: str
    study_uid: str
    accession: str
    patient: str
    sop_uid: str
    order: tuple[int, int, str]
    key: str  # a salted hash of the file's path: tells apart files shown alike
    has_region: bool
    labels: tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------------------
# classification and SR


def classify_instance(ds: Any) -> str:
    """The kind of a DICOM instance (one of :data:`INSTANCE_KINDS`) from its header alone.

    Modality and SOP class first (SR, secondary capture, not ultrasound), then the
    ultrasound regions' RegionDataType and RegionSpatialFormat (spectral and M-mode
    displays, colour flow), then NumberOfFrames (a still or a cine).
    """
    sop = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if sop.startswith(_SR_PREFIX) or modality == "SR":
        return "sr"
    if sop == _SECONDARY_CAPTURE or sop.startswith(_SECONDARY_CAPTURE + "."):
        return "secondary_capture"
    if "Rows" not in ds or (modality != "US" and sop not in _ULTRASOUND):
        return "other"
    types, formats = set(), set()
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        types.add(_int(item.get("RegionDataType", None)))
        formats.add(_int(item.get("RegionSpatialFormat", None)))
    if types & _SPECTRAL or formats & _NOT_2D:
        return "spectral_doppler"
    if _int(ds.get("NumberOfFrames", 1)) <= 1:
        return "still"
    return "color_cine" if types & _COLOUR_FLOW else "bmode_cine"


def _int(value: Any, default: int = 1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def sr_measurements(ds: Any) -> dict[str, float]:
    """The echo measurements of a structured report (TID 5200 and the like), by manifest column.

    Walks ContentSequence at every depth for NUM items whose concept name is a LOINC
    code of :data:`SR_CODES`, and converts their UCUM unit (lengths to cm, volumes to
    mL, a fraction to %). The first value of each measurement counts.
    """
    found: dict[str, float] = {}
    stack = list(ds.get("ContentSequence", None) or [])[::-1]
    while stack:
        item = stack.pop()
        stack.extend(list(item.get("ContentSequence", None) or [])[::-1])
        if str(item.get("ValueType", "")) != "NUM":
            continue
        names = item.get("ConceptNameCodeSequence", None) or []
        if not names or str(names[0].get("CodeValue", "")) not in SR_CODES:
            continue
        column, unit = SR_CODES[str(names[0].CodeValue)]
        if column in found:
            continue
        try:
            measured = item.MeasuredValueSequence[0]
            value = float(measured.NumericValue)
            units = measured.get("MeasurementUnitsCodeSequence", None) or []
            given = str(units[0].CodeValue).lower() if units else unit
        except (AttributeError, IndexError, TypeError, ValueError):
            continue
        factor = _TO_UNIT.get((given.lower(), unit))
        if factor is not None:
            found[column] = value * factor
    return found


# ---------------------------------------------------------------------------------------
# the run


def ingest(
    root: str | os.PathLike[str],
    reports: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: IngestConfig | None = None,
) -> IngestResult:
    """Turn the DICOM export under ``root`` and the ``reports`` CSV into a manifest in ``out``.

    Resumable: each study's videos and its record are written atomically, a rerun skips
    the recorded studies, and the manifest is the same for any ``workers``.

    Example::

        result = ingest("/exports/echo", "reports.csv", "data/echo", IngestConfig(workers=4))
        print(result.summary())

    Raises:
        DataError: ``root`` is not a folder, the reports table cannot be read or lacks
            its key or report column, or the salt differs from the one a partial run used.
    """
    config = config or IngestConfig()
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (the root of the DICOM export)")
    table = _read_reports(Path(reports), config)
    out.mkdir(parents=True, exist_ok=True)
    salt = _salt(out, config.salt)

    instances, skipped = _scan(root, config, salt)
    by_study: dict[str, list[_Instance]] = {}
    for inst in instances:
        by_study.setdefault(inst.study_uid, []).append(inst)

    by_accession, by_uid = table
    jobs: list[_StudyJob] = []
    matched: set[str] = set()
    for study_uid, members in by_study.items():
        accession = next((m.accession for m in members if m.accession), "")
        report, key = None, None
        if accession and accession in by_accession:
            report, key = by_accession[accession], ("a", accession)
        elif study_uid in by_uid:
            report, key = by_uid[study_uid], ("u", study_uid)
        study_id = salted_id(salt, "study", study_uid)
        if report is None:
            skipped += [(m.shown, "no report for this study in the reports table", m.key) for m in members]
            continue
        matched.add(f"{key[0]}:{key[1]}")
        patient = next((m.patient for m in members if m.patient), "")
        # short values (a StudyID "1") would cut words out of the report; paths take them all
        labels = {k: v for m in members for k, v in m.labels if len(k) >= 4}
        jobs.append(
            _StudyJob(
                study_id=study_id,
                patient_id=salted_id(salt, "patient", patient or study_uid),
                report=redact(report, values=labels),
                members=tuple(sorted(members, key=lambda m: m.order)),
                salt=salt,
                out=str(out),
                codec=config.codec,
                keep_no_region=config.keep_no_region,
            )
        )
    jobs.sort(key=lambda j: j.study_id)
    unmatched = len(by_accession) - sum(1 for k in matched if k.startswith("a:"))

    records = out / "studies"
    todo = [j for j in jobs if not (records / f"{j.study_id}.json").is_file()]
    if config.limit is not None:
        todo = todo[: max(config.limit, 0)]
    _run_jobs(todo, config)

    done = [j for j in jobs if (records / f"{j.study_id}.json").is_file()]
    result = IngestResult(
        out=out,
        complete=len(done) == len(jobs),
        studies=len(jobs),
        studies_done=len(done),
        videos=0,
        patients=len({j.patient_id for j in done}),
        unmatched_reports=max(unmatched, 0),
    )
    rows: list[dict[str, Any]] = []
    for job in done:
        record = json.loads((records / f"{job.study_id}.json").read_text(encoding="utf-8"))
        rows += [{**r, "report": job.report} for r in record["videos"]]
        skipped += [tuple(s) for s in record["skipped"]]
    skipped = sorted(set(skipped))
    result.videos = len(rows)
    result.skipped = _count_reasons(skipped)
    if result.complete:
        manifest = _manifest(rows, config.split_fractions)
        with atomic.writing(out / "manifest.parquet") as tmp:
            manifest.to_parquet(tmp, index=False)
        _write_report(out / "ingest_report.csv", skipped)
        log.info("%s", result.summary())
    else:
        log.info("%d of %d studies done; rerun to go on", len(done), len(jobs))
    return result


def _read_reports(path: Path, config: IngestConfig) -> tuple[dict[str, str], dict[str, str]]:
    """The reports by accession number and by Study Instance UID (when that column is named)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: reports table not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the reports table ({type(e).__name__})") from None
    columns = [config.accession_column, config.report_column] + (
        [config.uid_column] if config.uid_column else []
    )
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: the reports table has no column {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(repr, map(str, table.columns)))}); name it with "
            "--accession-column / --report-column / --uid-column"
        )
    reports = table[config.report_column].astype(str)
    by_accession = {
        str(a).strip(): r
        for a, r in zip(table[config.accession_column], reports, strict=True)
        if str(a).strip()
    }
    by_uid: dict[str, str] = {}
    if config.uid_column:
        by_uid = {
            str(u).strip(): r
            for u, r in zip(table[config.uid_column], reports, strict=True)
            if str(u).strip()
        }
    return by_accession, by_uid


def _salt(out: Path, given: str | None) -> str:
    """The salt of this output folder: given (checked against a partial run's), or kept in ``out/salt``."""
    given = given if given is not None else os.environ.get(SALT_ENV)
    stored, check = out / "salt", out / "salt.check"
    if given is not None:
        digest = hashlib.sha256(f"echoclip-ingest\x00{given}".encode()).hexdigest()
        if check.is_file() and check.read_text().strip() != digest:
            raise DataError(
                f"{out}: this folder was started with another salt; give the same salt or a new folder"
            )
        if stored.is_file() and stored.read_text().strip() != given:
            raise DataError(f"{out}: this folder was started with its own salt; rerun without --salt")
        if not check.is_file():
            atomic.write_text(check, digest + "\n")
        return given
    if check.is_file():
        raise DataError(f"{out}: this folder was started with --salt; give the same salt")
    if not stored.is_file():
        atomic.write_text(stored, secrets.token_hex(16) + "\n")
    return stored.read_text().strip()


def salted_id(salt: str, kind: str, value: str) -> str:
    """The id an output uses for ``value`` (a UID, a path): HMAC-SHA256 under the salt, 16 hex digits.

    ``kind`` ("study", "patient", "instance", "path") keeps equal values of two kinds apart.
    """
    return hmac.new(salt.encode(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()[:16]


def _scan(root: Path, config: IngestConfig, salt: str) -> tuple[list[_Instance], list[tuple[str, str, str]]]:
    """Every file's header: the instances worth a look, and the files that are not (with why)."""
    from tqdm.auto import tqdm

    files, skipped = _files(root)
    headers: list[tuple[Path, Any]] = []
    dir_labels: dict[Path, dict[str, str]] = {}
    bad: list[tuple[Path, str]] = []
    for path in tqdm(files, desc="headers", unit="file", disable=not config.progress):
        ds, reason = _read_header(path)
        if ds is None:
            bad.append((path, reason))
            continue
        headers.append((path, ds))
        labels = identifying_labels(ds)
        for parent in path.parents:  # a folder named after the patient is redacted for every file in it
            dir_labels.setdefault(parent, {}).update(labels)
            if parent == root:
                break

    def shown(path: Path, own: Mapping[str, str] | None = None) -> str:
        labels = {**dir_labels.get(path.parent, {}), **(own or {})}
        return shown_path(path, root, redact_path(path, values=labels))

    def key(path: Path) -> str:
        return salted_id(salt, "path", path.relative_to(root).as_posix())

    skipped = [(shown(p), why, key(p)) for p, why in [*skipped, *bad]]
    instances = []
    for path, ds in headers:
        labels = identifying_labels(ds)
        kind = classify_instance(ds)
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        name = shown(path, labels)
        if not study_uid:
            skipped.append((name, f"{kind}: no StudyInstanceUID in the header", key(path)))
            continue
        if kind == "other":
            modality = str(ds.get("Modality", "") or "none")
            sop = _uid_name(ds.get("SOPClassUID", None)) or "unknown"
            skipped.append((name, f"not an echo image (modality {modality}, SOP class {sop})", key(path)))
            continue
        instances.append(
            _Instance(
                path=str(path),
                shown=name,
                kind=kind,
                study_uid=study_uid,
                accession=str(ds.get("AccessionNumber", "") or "").strip(),
                patient=str(ds.get("PatientID", "") or "").strip(),
                sop_uid=str(ds.get("SOPInstanceUID", "") or name),
                order=(_int(ds.get("SeriesNumber", 0), 0), _int(ds.get("InstanceNumber", 0), 0), name),
                key=key(path),
                has_region=bool(ds.get("SequenceOfUltrasoundRegions", None)),
                labels=tuple({**dir_labels.get(path.parent, {}), **labels}.items()),
            )
        )
    return instances, skipped


def _uid_name(uid: Any) -> str:
    return str(getattr(uid, "name", "") or uid or "")


def _files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to read: those a DICOMDIR names when there is one, else every file."""
    every = sorted(Path(d) / f for d, _, names in os.walk(root) for f in names)
    dicomdir = root / "DICOMDIR"
    if not dicomdir.is_file():
        return [p for p in every if p.name != "DICOMDIR"], []
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fs = pydicom.fileset.FileSet(pydicom.dcmread(dicomdir))
        listed = {Path(instance.path).resolve() for instance in fs}
    except Exception as e:  # a broken DICOMDIR: read every file instead
        log.warning("DICOMDIR cannot be read (%s); reading every file", type(e).__name__)
        return [p for p in every if p != dicomdir], []
    files = [p for p in every if p.resolve() in listed]
    rest = [(p, "not listed in the DICOMDIR") for p in every if p != dicomdir and p.resolve() not in listed]
    return files, rest


def _read_header(path: Path) -> tuple[Any | None, str]:
    """The header of a DICOM file without its pixels, or None and why not."""
    import pydicom

    from echoclip.data.dicom import _pydicom_quiet

    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        return None, f"cannot open ({type(e).__name__})"
    if head[128:132] != b"DICM":
        return None, "not a DICOM file"
    with _pydicom_quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            len(ds)  # parse now: a broken header fails here, not later
        except Exception as e:  # the parser raises many types; their text may quote header values
            return None, f"unreadable DICOM header ({type(e).__name__})"
    if not len(ds):
        return None, "DICOM file holds no data set (truncated or corrupt)"
    return ds, ""


# ---------------------------------------------------------------------------------------
# one study (in a worker process)


@dataclass(frozen=True)
class _StudyJob:
    study_id: str
    patient_id: str
    report: str
    members: tuple[_Instance, ...]
    salt: str
    out: str
    codec: str
    keep_no_region: bool


def _run_jobs(jobs: list[_StudyJob], config: IngestConfig) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="ingest", unit="study", disable=not config.progress)
    try:
        if config.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _ingest_study(job)
                bar.update()
            return
        from echoclip.processes import process_pool

        with process_pool(config.workers) as pool:
            for _ in pool.map(_ingest_study, jobs):
                bar.update()
    finally:
        bar.close()


def _ingest_study(job: _StudyJob) -> str:
    """Convert one study's cines and read its SR; record the study last, atomically."""
    import pydicom

    from echoclip.data.dicom import read_dicom
    from echoclip.data.video import save_video

    out = Path(job.out)
    videos: list[dict[str, Any]] = []
    skipped: list[tuple[str, str, str]] = []
    measurements: dict[str, float] = {}
    for inst in job.members:
        labels = dict(inst.labels)
        if inst.kind == "sr":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = sr_measurements(pydicom.dcmread(inst.path))
            except Exception as e:  # a broken SR loses its measurements, not the study
                skipped.append((inst.shown, f"structured report unreadable ({type(e).__name__})", inst.key))
                continue
            if not found:
                skipped.append((inst.shown, _REASONS["sr"], inst.key))
            for k, v in found.items():
                measurements.setdefault(k, v)
            continue
        if inst.kind not in ("bmode_cine", "color_cine"):
            skipped.append((inst.shown, _REASONS[inst.kind], inst.key))
            continue
        if not inst.has_region and not job.keep_no_region:
            skipped.append(
                (
                    inst.shown,
                    "cine without an ultrasound region (screenshot or export without geometry)",
                    inst.key,
                )
            )
            continue
        try:
            video = read_dicom(inst.path, salt=job.salt)
        except VideoReadError as e:
            reason = e.reason if e.reason is not None else str(e)
            skipped.append((inst.shown, redact(reason, values=labels), inst.key))
            continue
        name = f"videos/{job.study_id}/{salted_id(job.salt, 'instance', inst.sop_uid)}.avi"
        save_video(video, out / name, codec=job.codec)
        videos.append(
            {
                "video_path": name,
                "patient_id": job.patient_id,
                "study_id": job.study_id,
                "view": "unknown",
                "kind": "color" if inst.kind == "color_cine" else "bmode",
                "cm_per_px": _first(video.meta.get("cm_per_px")),
                "fps": float(video.fps),
                "frames": int(video.frames.shape[0]),
                "height": int(video.frames.shape[1]),
                "width": int(video.frames.shape[2]),
                "manufacturer": str(video.meta.get("manufacturer", "")),
            }
        )
    for row in videos:
        row.update({c: measurements.get(c, float("nan")) for c in MEASUREMENT_COLUMNS})
    atomic.write_text(
        out / "studies" / f"{job.study_id}.json",
        json.dumps({"videos": atomic.jsonable(videos), "skipped": skipped}) + "\n",
    )
    return job.study_id


def _first(value: Any) -> float:
    """A pixel size as one number (the mean of x and y when both are given); NaN when unknown."""
    if value is None:
        return float("nan")
    if isinstance(value, (list, tuple)):
        values = [float(v) for v in value if v is not None]
        return sum(values) / len(values) if values else float("nan")
    return float(value)


# ---------------------------------------------------------------------------------------
# outputs


def _manifest(rows: list[dict[str, Any]], fractions: tuple[float, float, float]) -> Any:
    import numpy as np
    import pandas as pd

    columns = [
        "video_path", "report", "patient_id", "study_id", "view", "kind", "cm_per_px", "fps",
        "frames", "height", "width", "manufacturer", *MEASUREMENT_COLUMNS,
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns).sort_values(["study_id", "video_path"]).reset_index(drop=True)
    for c in MEASUREMENT_COLUMNS:
        table[c] = table[c].astype(float).replace({None: np.nan})
    # a patient's studies share a split: the hash is uniform, so its leading digits split it
    u = table["patient_id"].map(lambda p: int(p[:8], 16) / 16**8) if len(table) else table["patient_id"]
    table["split"] = np.where(
        u < fractions[0], "train", np.where(u < fractions[0] + fractions[1], "val", "test")
    )
    return table


def _count_reasons(skipped: Iterable[tuple[str, str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason, _ in skipped:
        key = reason.split(" (")[0].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def _write_report(path: Path, skipped: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "reason", "key"])
    writer.writerows(skipped)
    atomic.write_text(path, buf.getvalue())
