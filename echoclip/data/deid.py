"""De-identification: what of a DICOM header may leave the reader, and nothing else.

A :class:`~echoclip.data.video.Video` read from DICOM carries only what the pipeline
needs (size, timing, modality, manufacturer, ultrasound-region geometry) plus salted
hashes of the study and series UIDs, so that videos of one study can be grouped
without the UIDs themselves. Everything else in the header - names, ids, dates,
institutions - stays in the file. :func:`redact` removes those values from any text
that could still carry them (a decoder's error message, say) before it is raised or
logged, and :func:`redact_path` from the path of the file, whose folders are often
named after the patient in hospital exports. :func:`shown_path` is how datasets name a
file in logs, errors and ``skipped.csv``: relative to the data root the user passed.

The salt comes from the ``salt`` argument, else the ``ECHOCLIP_DEID_SALT``
environment variable, else a fixed project default. Set your own salt for real
data: with the default, anyone can recompute the hash of a known UID.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

SALT_ENV = "ECHOCLIP_DEID_SALT"
_DEFAULT_SALT = "echoclip-deid-v1"

# Header elements that identify a person, a place or a date, by DICOM keyword, and the
# word that stands in for their value in a path. Their values are redacted from any text
# we emit; none of them is ever copied into metadata.
IDENTIFYING_LABELS: dict[str, str] = {
    "PatientName": "patient",
    "PatientID": "patient",
    "IssuerOfPatientID": "patient",
    "OtherPatientIDs": "patient",
    "OtherPatientNames": "patient",
    "PatientBirthDate": "date",
    "PatientBirthTime": "time",
    "PatientBirthName": "patient",
    "PatientMotherBirthName": "patient",
    "PatientAddress": "patient",
    "PatientTelephoneNumbers": "patient",
    "MedicalRecordLocator": "patient",
    "AccessionNumber": "study",
    "StudyID": "study",
    "StudyDate": "date",
    "SeriesDate": "date",
    "AcquisitionDate": "date",
    "ContentDate": "date",
    "InstanceCreationDate": "date",
    "AcquisitionDateTime": "date",
    "StudyTime": "time",
    "SeriesTime": "time",
    "AcquisitionTime": "time",
    "ContentTime": "time",
    "InstitutionName": "institution",
    "InstitutionAddress": "institution",
    "InstitutionalDepartmentName": "institution",
    "ReferringPhysicianName": "staff",
    "PerformingPhysicianName": "staff",
    "NameOfPhysiciansReadingStudy": "staff",
    "OperatorsName": "staff",
    "StationName": "device",
    "DeviceSerialNumber": "device",
    "StudyInstanceUID": "uid",
    "SeriesInstanceUID": "uid",
    "SOPInstanceUID": "uid",
    "FrameOfReferenceUID": "uid",
}
IDENTIFYING_KEYWORDS: tuple[str, ...] = tuple(IDENTIFYING_LABELS)

# Ultrasound-region attributes worth keeping: where the image is and how big a pixel is.
_REGION_KEYWORDS: dict[str, str] = {
    "RegionSpatialFormat": "spatial_format",
    "RegionDataType": "data_type",
    "RegionLocationMinX0": "x0",
    "RegionLocationMinY0": "y0",
    "RegionLocationMaxX1": "x1",
    "RegionLocationMaxY1": "y1",
    "PhysicalUnitsXDirection": "units_x",
    "PhysicalUnitsYDirection": "units_y",
    "PhysicalDeltaX": "delta_x",
    "PhysicalDeltaY": "delta_y",
    "ReferencePixelX0": "ref_x0",
    "ReferencePixelY0": "ref_y0",
}


def hash_uid(uid: str, salt: str | None = None) -> str:
    """A salted, truncated SHA-256 of a UID: stable for grouping, not reversible."""
    salt = salt if salt is not None else os.environ.get(SALT_ENV, _DEFAULT_SALT)
    return hashlib.sha256(f"{salt}\x00{uid}".encode()).hexdigest()[:16]


def ultrasound_regions(ds: Any) -> list[dict[str, float | int]]:
    """The geometry of each entry of SequenceOfUltrasoundRegions, as plain numbers."""
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        region: dict[str, float | int] = {}
        for keyword, key in _REGION_KEYWORDS.items():
            value = item.get(keyword, None)
            if value is not None:
                region[key] = float(value) if isinstance(value, float) else int(value)
        if all(k in region for k in ("x0", "y0", "x1", "y1")):
            regions.append(region)
    return regions


def dicom_meta(ds: Any, salt: str | None = None) -> dict[str, Any]:
    """The de-identified metadata a DICOM video keeps (an allow-list, never a copy)."""
    meta: dict[str, Any] = {
        "source": "dicom",
        "modality": str(ds.get("Modality", "") or ""),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "sop_class": _uid_name(ds.get("SOPClassUID", None)),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "") or ""),
        "transfer_syntax": _uid_name(getattr(ds.get("file_meta", None), "TransferSyntaxUID", None)),
    }
    for keyword, key in (("StudyInstanceUID", "study_hash"), ("SeriesInstanceUID", "series_hash")):
        uid = ds.get(keyword, None)
        if uid:
            meta[key] = hash_uid(str(uid), salt)
    regions = ultrasound_regions(ds)
    if regions:
        meta["ultrasound_regions"] = regions
    heart_rate = positive_number(ds.get("HeartRate", None))  # beats per minute at acquisition
    if heart_rate is not None:
        meta["heart_rate"] = heart_rate
    return meta


def positive_number(value: Any) -> float | None:
    """A header value as a positive finite number, else None (absent, malformed, zero)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _uid_name(uid: Any) -> str:
    if not uid:
        return ""
    return str(getattr(uid, "name", "") or uid)


def identifying_values(ds: Any) -> list[str]:
    """The identifying strings of a dataset (see ``IDENTIFYING_KEYWORDS``), longest first.

    Person names are split into their components too, so a family name alone is
    also caught.
    """
    return sorted(identifying_labels(ds), key=len, reverse=True)


def identifying_labels(ds: Any) -> dict[str, str]:
    """The identifying strings of a dataset, each with the word that replaces it in a path."""
    labels: dict[str, str] = {}
    for keyword, label in IDENTIFYING_LABELS.items():
        try:
            value = ds.get(keyword, None)
        except Exception:  # a malformed element must not stop redaction of the others
            continue
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            labels.setdefault(text, label)
            for part in text.replace("=", "^").split("^"):
                if len(part.strip()) > 1:
                    labels.setdefault(part.strip(), label)
    return labels


Values = Mapping[str, str] | Iterable[str]


def _matcher(values: Values, within: str) -> tuple[re.Pattern[str] | None, dict[str, str]]:
    """One pattern for every value found in ``within``, matching it only as a whole word, and
    the labels by folded value.

    A value counts only where it is not part of a longer run of letters and digits:
    the modality-like "OB" must not eat into the file name ``OBXXXX1A.dcm``, while
    ``DOE^JANE`` is found in ``DOE^JANE_0001.dcm`` (``_`` separates words in file names).
    """
    labels = dict(values) if isinstance(values, Mapping) else dict.fromkeys(values, "redacted")
    # only the values that occur in the text: a file's UIDs make its set of values unique,
    # and compiling one pattern of them all for each path took most of an ingest's time
    lowered = within.lower() if within.isascii() else None
    labels = {k: v for k, v in labels.items() if k and _occurs(k, within, lowered)}
    if not labels:
        return None, {}
    ordered = sorted(labels, key=len, reverse=True)  # the whole name before its parts
    alternation = "|".join(re.escape(v) for v in ordered)
    pattern = re.compile(_WHOLE_WORD.format(alternation), re.IGNORECASE)
    return pattern, {k.casefold(): v for k, v in labels.items()}


_WHOLE_WORD = r"(?<![^\W_])(?:{})(?![^\W_])"


def _occurs(value: str, text: str, lowered: str | None) -> bool:
    """Whether ``value`` occurs in ``text`` as the pattern of :func:`_matcher` finds it.

    ``lowered``: ``text.lower()`` when ``text`` is ASCII. Between ASCII strings, matching
    regardless of case is matching lower case (beyond ASCII, "İ" matches "i" too), so
    a value not in ``lowered`` is absent without running a pattern.
    """
    if lowered is not None and value.isascii() and value.lower() not in lowered:
        return False
    return _word_pattern(value).search(text) is not None


@functools.lru_cache(maxsize=4096)
def _word_pattern(value: str) -> re.Pattern[str]:
    return re.compile(_WHOLE_WORD.format(re.escape(value)), re.IGNORECASE)


def redact(text: str, ds: Any | None = None, values: Values | None = None) -> str:
    """``text`` with every identifying value of ``ds`` (or ``values``) replaced by ``[redacted]``.

    Only whole values are replaced, never parts of other words: a value counts where
    no letter or digit adjoins it, so a header value "OB" leaves ``OBXXXX1A.dcm`` whole.
    """
    if values is None:
        values = identifying_labels(ds) if ds is not None else {}
    pattern, _ = _matcher(values, text)
    return text if pattern is None else pattern.sub("[redacted]", text)


def redact_path(
    path: str | os.PathLike[str], ds: Any | None = None, values: Values | None = None
) -> PurePath:
    """``path`` with each identifying value in its components replaced by a label.

    A folder named after the patient becomes ``[patient]``, a file ``DOE^JANE_01.dcm``
    ``[patient]_01.dcm``; the result has as many components as ``path``, so it can
    still be cut relative to a data root (see :func:`shown_path`).
    """
    if values is None:
        values = identifying_labels(ds) if ds is not None else {}
    path = PurePath(path)
    pattern, labels = _matcher(values, str(path))
    if pattern is None:
        return path

    def label(match: re.Match[str]) -> str:
        return f"[{labels.get(match.group(0).casefold(), 'redacted')}]"

    parts = [part if part == path.anchor else pattern.sub(label, part) for part in path.parts]
    return PurePath(*parts)


def shown_path(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    redacted: str | os.PathLike[str] | None = None,
) -> str:
    """How a data file is named in logs, errors and ``skipped.csv``.

    Relative to ``root`` (the data root the user passed) when the file lies under it:
    the folders above the root are the user's own and, in hospital exports, often
    carry names. ``redacted`` is the path as a reader named it (``VideoReadError.path``,
    with identifying header values replaced); it is cut to the same components.
    A ``redacted`` name of another shape is shown as it is.

    Example: ``shown_path("/exports/DOE^JANE/IM1.dcm", "/exports",
    "/exports/[patient]/IM1.dcm")`` is ``"[patient]/IM1.dcm"``.
    """
    path = PurePath(path)
    parts = path.parts
    if redacted is not None:
        redacted = PurePath(redacted)
        if len(redacted.parts) != len(parts):
            return str(redacted)
        parts = redacted.parts
    if root is not None:
        try:
            inside = PurePath(os.path.abspath(path)).relative_to(os.path.abspath(root))
        except ValueError:
            inside = None
        if inside is not None and inside.parts:
            parts = parts[len(parts) - len(inside.parts) :]
    return str(PurePath(*parts))


def read_failure(
    path: str | os.PathLike[str], error: BaseException, root: str | os.PathLike[str] | None = None
) -> tuple[str, str]:
    """``(shown path, reason)`` of a file a reader could not read, for logs and skip reports.

    Uses the parts a reader gave apart (``VideoReadError.path``, ``.reason``); for a
    reader that gave only a message ``"<path>: <reason>"`` the reason is cut from it.
    """
    reason = getattr(error, "reason", None)
    if reason is None:
        reason = str(error).removeprefix(f"{path}: ")
    return shown_path(path, root, getattr(error, "path", None)), reason
