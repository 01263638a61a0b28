"""Studies per second of ``echoclip ingest`` on a simulated hospital export, against a plain loop.

Writes a simulated DICOM archive (``simulate_archive``: cines of four views, a still, a
spectral Doppler strip, an SR, a secondary capture with burnt-in text per study, corrupt
and non-DICOM files, reports keyed by accession number), then times

- the baseline: a plain loop that reads every file with pydicom, decodes its pixels and
  keeps the multi-frame ones (what a first script does, and all it does);
- ``ingest`` with ``--workers`` processes: headers first, classification, SR
  measurements, de-identification, the kept cines masked and written as lossless AVIs,
  the manifest and ``ingest_report.csv``.

It also checks what the ingest issue asks of the result: every cine of every reported
study in the manifest exactly once, every other file in ``ingest_report.csv``, the SR's
LVEF equal to the manifest's ``ef``, and none of the archive's patient names, ids, birth
dates, accession numbers or burnt-in texts in any output file. Prints one JSON line.

    python benchmarks/bench_ingest.py [--studies 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from machine import describe_machine

CINES = ("bmode_cine", "color_cine")


def _plain_loop(root: Path) -> int:
    """Read every file's pixels with pydicom and keep the multi-frame ones; returns how many."""
    import pydicom

    kept = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 - the baseline skips whatever it cannot read
            continue
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 and pixels.ndim >= 3:
            kept += 1
    return kept


def _checks(archive: Path, out: Path, salt: str) -> dict[str, Any]:
    import pandas as pd

    from echoclip.data.ingest import salted_id

    truth = pd.read_csv(archive / "truth.csv", dtype={"accession": str, "birth_date": str, "patient_id": str})
    reported = set(pd.read_csv(archive / "reports.csv", dtype=str)["accession_number"])
    truth["reported"] = truth["accession"].isin(reported)
    kept = truth[truth["kind"].isin(CINES) & truth["reported"] & truth["keep"].astype(bool)]
    expected = {
        f"videos/{salted_id(salt, 'study', s)}/{salted_id(salt, 'instance', u)}.avi"
        for s, u in zip(kept["study_uid"], kept["sop_uid"], strict=True)
    }
    manifest = pd.read_parquet(out / "manifest.parquet")
    report = pd.read_csv(out / "ingest_report.csv")
    used = truth["reported"] & truth["keep"].astype(bool) & truth["kind"].isin((*CINES, "sr"))
    unused = {salted_id(salt, "path", p) for p in truth.loc[~used, "path"]}
    sr = truth[truth["kind"] == "sr"]
    sr_ef = dict(zip(sr["study_uid"].map(lambda u: salted_id(salt, "study", u)), sr["ef"], strict=True))
    ef_match = all(abs(row.ef - float(sr_ef[row.study_id])) < 0.01 for row in manifest.itertuples())
    secrets = set()
    for column in ("patient_name", "patient_id", "birth_date", "accession", "burnt_in"):
        secrets |= {str(v) for v in truth[column].dropna() if len(str(v)) >= 4}
    leaks = 0
    for path in out.rglob("*"):
        if path.is_file() and path.name != "salt":
            data = path.read_bytes()
            leaks += sum(s.encode() in data for s in secrets)
    return {
        "files": int(len(truth)),
        "cines_expected": len(expected),
        "manifest_rows": int(len(manifest)),
        "every_cine_once": bool(manifest["video_path"].is_unique and set(manifest["video_path"]) == expected),
        "every_other_file_reported": bool(set(report["key"]) == unused),
        "sr_ef_equals_manifest": bool(ef_match),
        "identifier_occurrences": int(leaks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from echoclip.data.ingest import IngestConfig, ingest
    from echoclip.data.synthetic import simulate_archive

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    salt = "bench-salt"
    try:
        archive = simulate_archive(
            work / "archive",
            n=args.studies,
            seed=args.seed,
            size=args.size,
            frames=args.frames,
            views=("A4C", "A2C", "PLAX", "PSAX"),
        )
        t0 = time.perf_counter()
        plain_kept = _plain_loop(archive / "dicom")
        plain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = ingest(
            archive / "dicom",
            archive / "reports.csv",
            work / "out",
            IngestConfig(salt=salt, workers=args.workers, progress=False),
        )
        ingest_s = time.perf_counter() - t0
        checks = _checks(archive, work / "out", salt)
        print(
            json.dumps(
                {
                    "benchmark": "ingest",
                    "date": date.today().isoformat(),
                    "machine": describe_machine(),
                    "studies": args.studies,
                    "workers": args.workers,
                    "ingest_studies_per_s": round(args.studies / ingest_s, 2),
                    "plain_loop_studies_per_s": round(args.studies / plain_s, 2),
                    "ratio": round(plain_s / ingest_s, 2),
                    "plain_loop_multiframe_kept": plain_kept,
                    "ingest_videos": result.videos,
                    **checks,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
