"""From a hospital DICOM export and a reports table to a de-identified training manifest.

A hospital export is a tree of thousands of files: cines in B-mode and colour Doppler,
stills, spectral Doppler strips, structured reports holding the measurements,
screenshots with the patient's name burnt in, and files that are not DICOM at all.
The reports live in another system, keyed by accession number. :func:`ingest` reads
every header (never the pixels) to sort the files, groups them into studies, joins the
reports, reads the measurements of each study's SR, and then, for each kept cine:

- ``videos="convert"`` (the default): converts it - cropped to its ultrasound region and
  masked outside the sector, as :func:`~echoclip.data.video.load_video` reads it - into
  a lossless AVI. The data set holds no identifying pixel or header: it can be shared.
- ``videos="link"``: links the source DICOM into the data set (a hard link, else a
  symbolic link, else a copy) and decodes no pixel. :func:`~echoclip.data.dicom.probe_dicom`
  checks from the header and the pixel data's layout that a read will work (timing,
  decoder, a file cut short) and gives the manifest's geometry; the reader crops,
  masks and de-identifies each time training reads the file. Its time does not grow
  with the cines' size, but the linked files are the hospital's, headers and burnt-in
  text included: keep such a data set where the export is kept, and convert one that
  leaves it.

What conversion learns from the pixels - the sector of a cine without an ultrasound
region, frames that do not decode - a linked data set learns when training reads the
file (the sector is found on each read; an undecodable file is skipped and logged).
Sorting the files needs no pixel in either mode: :func:`classify_instance` reads the
header's SOP class and ultrasound regions.

Output folder::

    manifest.parquet    one row per video: video_path, report, patient_id, study_id
                        (salted hashes), view ("unknown"), kind (bmode / color),
                        cm_per_px, fps, frames, split, and the SR's measurements
                        (ef, lvidd_cm, ivsd_cm, lvpwd_cm, edv, esv; NaN when absent)
    ingest_report.csv   every file not used: file (relative to the root, components
                        holding header values replaced), reason, key (a salted hash of
                        the path, which tells apart files shown alike)
    videos/<study>/<instance>.avi   (convert) or .dcm, the source DICOM linked (link)
    studies/<study>.json   the finished studies: a rerun skips them
    salt                the salt of the hashes, when none was given (keep it private)

Nothing identifying leaves the headers: no name, id, date, accession number or UID is
written, logged or raised; the ids are HMAC-SHA256 of the UIDs under the salt. Paths in
the data set are these hashes; a symbolic link is made only to a source path that holds
no header value (else a copy), since the link stores the path.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from echoclip import atomic
from echoclip.data.deid import SALT_ENV, identifying_labels, redact, redact_path
from echoclip.errors import ConfigError, DataError, VideoReadError

__all__ = [
    "INSTANCE_KINDS",
    "SR_CODES",
    "IngestConfig",
    "IngestResult",
    "VIDEO_MODES",
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

# what becomes of a kept cine: a lossless AVI, or a link to the source DICOM
VIDEO_MODES: tuple[str, ...] = ("convert", "link")

_CINES = ("bmode_cine", "color_cine")

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
    (the rest on a rerun). ``videos``: ``"convert"`` each kept cine to a lossless AVI, or
    ``"link"`` the source DICOM into the data set without decoding it (see the module's
    notes: such a data set holds the identifiable source files).
    """

    accession_column: str = "accession_number"
    report_column: str = "report"
    uid_column: str | None = None
    salt: str | None = None
    workers: int = 1
    keep_no_region: bool = False
    codec: str = "ffv1"
    videos: Literal["convert", "link"] = "convert"
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
    links: dict[str, int] = field(default_factory=dict)  # link mode: videos by "hard"/"symlink"/"copy"

    def summary(self) -> str:
        """One line: what was ingested, what was left out and why."""
        left = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        linked = ", ".join(f"{n} {_LINK_NAMES[k]}" for k, n in sorted(self.links.items()))
        videos = f"{self.videos} videos" + (f" (linked: {linked})" if linked else "")
        head = (
            f"ingested {videos} of {self.studies_done} studies ({self.patients} patients) into {self.out}"
            if self.complete
            else f"{self.studies_done} of {self.studies} studies done; rerun to resume ({self.out})"
        )
        return (
            f"{head}; {sum(self.skipped.values())} files not used"
            + (f" ({left})" if left else "")
            + f"; {self.unmatched_reports} reports match no study"
        )


_LINK_NAMES = {"hard": "hard links", "symlink": "symbolic links", "copy": "copies"}


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
    probe: dict[str, Any] | str | None = None  # link mode: probe_dicom's facts, or why it failed
    plain: bool = False  # link mode: no header value shows in the path (a symbolic link may name it)


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
    if config.videos not in VIDEO_MODES:
        raise ConfigError(f"unknown videos mode {config.videos!r}; known: {', '.join(VIDEO_MODES)}")
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (the root of the DICOM export)")
    with _pool(config.workers) as pool:  # the workers start while the reports are read
        table = _read_reports(Path(reports), config)
        out.mkdir(parents=True, exist_ok=True)
        salt = _salt(out, config.salt)
        _check_mode(out / "studies", config.videos)
        return _ingest(root, out, table, salt, config, pool)


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """One pool of ``workers`` processes for the headers and the studies, started now; None for one."""
    if workers <= 1:
        yield None
        return
    from echoclip.processes import process_pool

    with process_pool(workers) as pool:
        for _ in range(workers):
            pool.submit(_warm_up)
        yield pool


def _warm_up() -> None:
    """Import what reading headers needs, in a worker, before its first file."""
    import echoclip.data.dicom  # noqa: F401


def _ingest(
    root: Path,
    out: Path,
    table: tuple[dict[str, str], dict[str, str]],
    salt: str,
    config: IngestConfig,
    pool: Any,
) -> IngestResult:
    instances, skipped = _scan(root, config, salt, pool)
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
                videos=config.videos,
            )
        )
    jobs.sort(key=lambda j: j.study_id)
    unmatched = len(by_accession) - sum(1 for k in matched if k.startswith("a:"))

    records = out / "studies"
    todo = [j for j in jobs if not (records / f"{j.study_id}.json").is_file()]
    if config.limit is not None:
        todo = todo[: max(config.limit, 0)]
    _run_jobs(todo, config, pool)

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
    for row in rows:
        if row.get("link"):
            result.links[row["link"]] = result.links.get(row["link"], 0) + 1
    if result.links.get("copy"):
        log.warning(
            "%d of %d cines were copied, not linked: no hard link is possible (another file system, or "
            "links not permitted) and a symbolic link would store a source path that holds patient data",
            result.links["copy"],
            len(rows),
        )
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


def _check_mode(records: Path, videos: str) -> None:
    """Refuse to go on a folder a partial run began in another videos mode (its records say which)."""
    first = next(records.glob("*.json"), None) if records.is_dir() else None
    if first is None:
        return
    began = json.loads(first.read_text(encoding="utf-8")).get("mode", "convert")
    if began != videos:
        raise DataError(
            f"{records.parent}: this folder was started with videos {began!r}, not {videos!r}; "
            "give the same mode or a new folder"
        )


def salted_id(salt: str, kind: str, value: str) -> str:
    """The id an output uses for ``value`` (a UID, a path): HMAC-SHA256 under the salt, 16 hex digits.

    ``kind`` ("study", "patient", "instance", "path") keeps equal values of two kinds apart.
    """
    return hmac.new(salt.encode(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()[:16]


def _scan(
    root: Path, config: IngestConfig, salt: str, pool: Any
) -> tuple[list[_Instance], list[tuple[str, str, str]]]:
    """Every file's header: the instances worth a look, and the files that are not (with why)."""
    from tqdm.auto import tqdm

    files, skipped = _files(root)
    look = functools.partial(_look, probe=config.videos == "link")
    if pool is None:
        looks: Iterable[_Look] = map(look, files)
    else:  # the headers are read in the workers, in chunks: each is a fraction of a millisecond
        looks = pool.map(look, files, chunksize=max(1, min(64, len(files) // (8 * config.workers))))
    headers: list[_Look] = []
    dir_labels: dict[Path, dict[str, str]] = {}
    bad: list[tuple[Path, str]] = []
    for seen in tqdm(looks, total=len(files), desc="headers", unit="file", disable=not config.progress):
        if seen.reason:
            bad.append((seen.path, seen.reason))
            continue
        headers.append(seen)
        for parent in seen.path.parents:  # a folder named after the patient is redacted for every file in it
            dir_labels.setdefault(parent, {}).update(seen.labels)
            if parent == root:
                break

    def folder_labels(folder: Path) -> dict[str, str]:
        """The values of the headers under the nearest folder that holds any: a folder of
        thumbnails inside the patient's folder has none of its own."""
        for above in (folder, *folder.parents):
            if above in dir_labels or above == root:
                return dir_labels.get(above, {})
        return {}

    @functools.cache
    def shown_folder(folder: Path) -> PurePath:
        """The folder relative to the root, each name redacted by the headers found under it."""
        if folder == root:
            return PurePath()
        return shown_folder(folder.parent) / redact_path(folder.name, values=folder_labels(folder))

    def shown(path: Path, own: Mapping[str, str] | None = None) -> str:
        labels = {**folder_labels(path.parent), **(own or {})}
        return str(shown_folder(path.parent) / redact_path(path.name, values=labels))

    def key(path: Path) -> str:
        return salted_id(salt, "path", path.relative_to(root).as_posix())

    def plain(path: Path, name: str, labels: Mapping[str, str]) -> bool:
        """Whether no header value shows in the absolute path: a symbolic link would store it."""
        above = os.path.abspath(root)
        return name == str(path.relative_to(root)) and str(redact_path(above, values=labels)) == above

    skipped = [(shown(p), why, key(p)) for p, why in [*skipped, *bad]]
    link = config.videos == "link"
    instances = []
    for seen in headers:
        path, kind = seen.path, seen.kind
        name = shown(path, seen.labels)
        if not seen.study_uid:
            skipped.append((name, f"{kind}: no StudyInstanceUID in the header", key(path)))
            continue
        if kind == "other":
            skipped.append(
                (name, f"not an echo image (modality {seen.modality}, SOP class {seen.sop_class})", key(path))
            )
            continue
        instances.append(
            _Instance(
                path=str(path),
                shown=name,
                kind=kind,
                study_uid=seen.study_uid,
                accession=seen.accession,
                patient=seen.patient,
                sop_uid=seen.sop_uid or name,
                order=(seen.series, seen.number, name),
                key=key(path),
                has_region=seen.has_region,
                labels=tuple({**folder_labels(path.parent), **seen.labels}.items()),
                probe=seen.probe,
                plain=link and kind in _CINES and plain(path, name, seen.labels),
            )
        )
    return instances, skipped


@dataclass(frozen=True)
class _Look:
    """What one file's header says, as a worker sends it back (identifiers held in memory only)."""

    path: Path
    reason: str = ""  # why the file is not read further; empty when it is
    labels: dict[str, str] = field(default_factory=dict)
    kind: str = "other"
    study_uid: str = ""
    accession: str = ""
    patient: str = ""
    sop_uid: str = ""
    series: int = 0
    number: int = 0
    has_region: bool = False
    modality: str = "none"
    sop_class: str = "unknown"
    probe: dict[str, Any] | str | None = None  # a cine's probe_dicom, or why it failed


def _look(path: Path, probe: bool = False) -> _Look:
    """Read the header of ``path`` and sort the file; with ``probe``, also probe a cine's pixel data."""
    ds, offset, reason = _read_header(path)
    if ds is None:
        return _Look(path, reason=reason)
    kind = classify_instance(ds)
    checked: dict[str, Any] | str | None = None
    if probe and kind in _CINES:
        from echoclip.data.dicom import probe_dicom

        try:
            checked = probe_dicom(path, header=(ds, offset))
        except VideoReadError as e:
            checked = e.reason if e.reason is not None else str(e)
        except Exception as e:  # an odd header value; its text may quote it
            checked = f"cannot probe the DICOM header ({type(e).__name__})"
    return _Look(
        path,
        labels=identifying_labels(ds),
        kind=kind,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        accession=str(ds.get("AccessionNumber", "") or "").strip(),
        patient=str(ds.get("PatientID", "") or "").strip(),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        series=_int(ds.get("SeriesNumber", 0), 0),
        number=_int(ds.get("InstanceNumber", 0), 0),
        has_region=bool(ds.get("SequenceOfUltrasoundRegions", None)),
        modality=str(ds.get("Modality", "") or "none"),
        sop_class=_uid_name(ds.get("SOPClassUID", None)) or "unknown",
        probe=checked,
    )


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


def _read_header(path: Path) -> tuple[Any | None, int, str]:
    """The header of a DICOM file without its pixels and where it ends in the file, or None and why not."""
    import pydicom

    from echoclip.data.dicom import _pydicom_quiet

    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; open errors get their own reason
    except OSError as e:
        return None, 0, f"cannot open ({type(e).__name__})"
    with f, _pydicom_quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if f.read(132)[128:132] != b"DICM":
                return None, 0, "not a DICOM file"
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            len(ds)  # parse now: a broken header fails here, not later
            offset = f.tell()  # the pixel data's tag, or the end of the file
        except Exception as e:  # the parser raises many types; their text may quote header values
            return None, 0, f"unreadable DICOM header ({type(e).__name__})"
    if not len(ds):
        return None, 0, "DICOM file holds no data set (truncated or corrupt)"
    return ds, offset, ""


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
    videos: str = "convert"


def _run_jobs(jobs: list[_StudyJob], config: IngestConfig, pool: Any) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="ingest", unit="study", disable=not config.progress)
    try:
        if pool is None or len(jobs) <= 1:
            for job in jobs:
                _ingest_study(job)
                bar.update()
            return
        for _ in pool.map(_ingest_study, jobs):
            bar.update()
    finally:
        bar.close()


def _ingest_study(job: _StudyJob) -> str:
    """Convert or link one study's cines and read its SR; record the study last, atomically."""
    import pydicom

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
        if inst.kind not in _CINES:
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
            row = _VIDEO_WRITERS[job.videos](job, inst)
        except VideoReadError as e:
            reason = e.reason if e.reason is not None else str(e)
            skipped.append((inst.shown, redact(reason, values=labels), inst.key))
            continue
        videos.append(
            {
                "patient_id": job.patient_id,
                "study_id": job.study_id,
                "view": "unknown",
                "kind": "color" if inst.kind == "color_cine" else "bmode",
                **row,
            }
        )
    for row in videos:
        row.update({c: measurements.get(c, float("nan")) for c in MEASUREMENT_COLUMNS})
    atomic.write_text(
        out / "studies" / f"{job.study_id}.json",
        json.dumps({"mode": job.videos, "videos": atomic.jsonable(videos), "skipped": skipped}) + "\n",
    )
    return job.study_id


def _video_name(job: _StudyJob, inst: _Instance, suffix: str) -> str:
    return f"videos/{job.study_id}/{salted_id(job.salt, 'instance', inst.sop_uid)}{suffix}"


def _convert_cine(job: _StudyJob, inst: _Instance) -> dict[str, Any]:
    """Decode, crop and mask the cine and write it as a lossless AVI; its manifest facts."""
    from echoclip.data.dicom import read_dicom
    from echoclip.data.video import save_video

    video = read_dicom(inst.path, salt=job.salt)
    name = _video_name(job, inst, ".avi")
    save_video(video, Path(job.out) / name, codec=job.codec)
    return {
        "video_path": name,
        "cm_per_px": _first(video.meta.get("cm_per_px")),
        "fps": float(video.fps),
        "frames": int(video.frames.shape[0]),
        "height": int(video.frames.shape[1]),
        "width": int(video.frames.shape[2]),
        "manufacturer": str(video.meta.get("manufacturer", "")),
    }


def _link_cine(job: _StudyJob, inst: _Instance) -> dict[str, Any]:
    """Check the cine from its header and pixel layout and link it into the data set; its manifest facts.

    The facts are those :func:`_convert_cine` records for the same file (the reader's
    crop), except that a cine without a region keeps its frame's size.
    """
    facts = inst.probe  # probed as the headers were read
    if isinstance(facts, str) or facts is None:
        reason = facts or "not probed"
        raise VideoReadError(f"{inst.shown}: {reason}", reason=reason)
    name = _video_name(job, inst, ".dcm")
    # a symbolic link stores its target: only to a path in which no header value shows
    how = atomic.link(os.path.abspath(inst.path), Path(job.out) / name, symlink=inst.plain)
    return {
        "video_path": name,
        "cm_per_px": _first(facts.get("cm_per_px")),
        "fps": float(facts["fps"]),
        "frames": int(facts["frames"]),
        "height": int(facts["height"]),
        "width": int(facts["width"]),
        "manufacturer": str(facts.get("manufacturer", "")),
        "link": how,
    }


_VIDEO_WRITERS = {"convert": _convert_cine, "link": _link_cine}


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
