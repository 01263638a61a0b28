"""De-identification: what of a DICOM header may leave the reader, and nothing else.

A :class:`~echoclip.data.video.Video` read from DICOM carries only what the pipeline
needs (size, timing, modality, manufacturer, ultrasound-region geometry) plus salted
hashes of the study and series UIDs, so that videos of one study can be grouped
without the UIDs themselves. Everything else in the header - names, ids, dates,
institutions - stays in the file. :func:`redact` removes those values from any text
that could still carry them (a decoder's error message, say) before it is raised or
logged.

The salt comes from the ``salt`` argument, else the ``ECHOCLIP_DEID_SALT``
environment variable, else a fixed project default. Set your own salt for real
data: with the default, anyone can recompute the hash of a known UID.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

SALT_ENV = "ECHOCLIP_DEID_SALT"
_DEFAULT_SALT = "echoclip-deid-v1"

# Header elements that identify a person, a place or a date, by DICOM keyword. Their
# values are redacted from any text we emit; none of them is ever copied into metadata.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "AcquisitionDateTime",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)

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
    return meta


def _uid_name(uid: Any) -> str:
    if not uid:
        return ""
    return str(getattr(uid, "name", "") or uid)


def identifying_values(ds: Any) -> list[str]:
    """The identifying strings of a dataset (see ``IDENTIFYING_KEYWORDS``), longest first.

    Person names are split into their components too, so a family name alone is
    also caught.
    """
    values: set[str] = set()
    for keyword in IDENTIFYING_KEYWORDS:
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
            values.add(text)
            values.update(part.strip() for part in text.replace("=", "^").split("^") if len(part.strip()) > 1)
    return sorted(values, key=len, reverse=True)


def redact(text: str, ds: Any | None = None, values: list[str] | None = None) -> str:
    """``text`` with every identifying value of ``ds`` (or ``values``) replaced by ``[redacted]``."""
    if values is None:
        values = identifying_values(ds) if ds is not None else []
    for value in values:
        if value in text:
            text = text.replace(value, "[redacted]")
    return text
