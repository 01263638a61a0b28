"""Studies per second of ``echoclip ingest`` on a simulated hospital export, in both of its
modes, against a plain loop.

Writes a simulated DICOM archive (``simulate_archive``: cines of four views, stills, a
spectral Doppler strip, an SR, a secondary capture with burnt-in text per study, reports
keyed by accession number; ``--stills`` stills per study and at least ``--distractors``
non-echo files - notes, thumbnails, PDFs, CT images - and ``--corrupt`` damaged DICOM
files, as fractions of the archive), then times, on the same archive in the same run,

- the baseline: a plain loop that reads every file with pydicom, decodes its pixels and
  keeps the multi-frame ones (what a first script does, and all it does);
- ``ingest --videos convert`` with ``--workers`` processes: headers first,
  classification, SR measurements, de-identification, the kept cines decoded, masked
  and written as lossless AVIs, the manifest and ``ingest_report.csv``;
- ``ingest --videos link``: the same, except that each kept cine is checked from its
  header and the layout of its pixel data and linked into the data set, no pixel decoded.

Wall time is what a user waits; CPU time (this process and its workers) is the work,
which other jobs on the machine do not change. It also checks what the ingest issue asks
of each result: every cine of every reported study in the manifest exactly once, every
other file in ``ingest_report.csv``, the SR's LVEF equal to the manifest's ``ef``, and
none of the archive's patient names, ids, birth dates, accession numbers or burnt-in
texts in any output file (the linked DICOMs aside: they are the export's own files, and
a link's target path is checked instead). Prints one JSON line; ``--save`` appends it to
``benchmarks/results/ingest.jsonl``.

    python benchmarks/bench_ingest.py [--studies 200] [--workers 2] [--save]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from machine import describe_machine, emit

CINES = ("bmode_cine", "color_cine")
RESULTS = Path(__file__).parent / "results" / "ingest.jsonl"


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


def _timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)``, its wall seconds, and the CPU seconds of this process and of the workers it ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (
        time.process_time()
        - cpu
        + (after.ru_utime - children.ru_utime)
        + (after.ru_stime - children.ru_stime)
    )
    return result, wall, cpu


def _checks(archive: Path, out: Path, salt: str, suffix: str) -> dict[str, Any]:
    import pandas as pd

    from echoclip.data.ingest import salted_id

    truth = pd.read_csv(archive / "truth.csv", dtype={"accession": str, "birth_date": str, "patient_id": str})
    reported = set(pd.read_csv(archive / "reports.csv", dtype=str)["accession_number"])
    truth["reported"] = truth["accession"].isin(reported)
    kept = truth[truth["kind"].isin(CINES) & truth["reported"] & truth["keep"].astype(bool)]
    expected = {
        f"videos/{salted_id(salt, 'study', s)}/{salted_id(salt, 'instance', u)}{suffix}"
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
        if path.is_symlink():
            leaks += sum(s in os.readlink(path) for s in secrets)
        if path.is_file() and path.name != "salt" and path.suffix != ".dcm":
            data = path.read_bytes()
            leaks += sum(s.encode() in data for s in secrets)
    return {
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
    parser.add_argument("--stills", type=int, default=2, help="stills per study (default 2)")
    parser.add_argument("--distractors", type=float, default=0.05, help="least share of non-echo files")
    parser.add_argument("--corrupt", type=float, default=0.01, help="least share of damaged DICOM files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help=f"append the JSON line to {RESULTS}")
    args = parser.parse_args()

    import pandas as pd

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
            stills=args.stills,
            distractors=args.distractors,
            corrupt=args.corrupt,
        )
        kinds = pd.read_csv(archive / "truth.csv")["kind"].value_counts()
        load = os.getloadavg()[0]
        plain_kept, plain_s, plain_cpu = _timed(_plain_loop, archive / "dicom")
        line: dict[str, Any] = {
            "benchmark": "ingest",
            "date": date.today().isoformat(),
            "machine": describe_machine(),
            "load_average_1min": round(load, 2),
            "studies": args.studies,
            "files": int(kinds.sum()),
            "distractor_files": int(kinds.reindex(["junk", "other_modality"]).fillna(0).sum()) - 1,
            "corrupt_files": int(kinds.reindex(["truncated", "corrupt"]).fillna(0).sum()) + 1,
            "workers": args.workers,
            "plain_loop_studies_per_s": round(args.studies / plain_s, 2),
            "plain_loop_cpu_s": round(plain_cpu, 2),
            "plain_loop_multiframe_kept": plain_kept,
        }
        manifests = {}
        for mode, suffix in (("convert", ".avi"), ("link", ".dcm")):
            out = work / f"out-{mode}"
            config = IngestConfig(salt=salt, workers=args.workers, progress=False, videos=mode)
            result, wall, cpu = _timed(ingest, archive / "dicom", archive / "reports.csv", out, config)
            checks = _checks(archive, out, salt, suffix)
            manifests[mode] = pd.read_parquet(out / "manifest.parquet")
            line.update(
                {
                    f"{mode}_studies_per_s": round(args.studies / wall, 2),
                    f"{mode}_ratio": round(plain_s / wall, 2),
                    f"{mode}_cpu_s": round(cpu, 2),
                    f"{mode}_cpu_ratio": round(plain_cpu / cpu, 2),
                    f"{mode}_videos": result.videos,
                    **{f"{mode}_{k}": v for k, v in checks.items()},
                }
            )
            if mode == "link":
                line["link_kinds"] = result.links
        linked = manifests["link"].assign(
            video_path=manifests["link"]["video_path"].str.replace(".dcm", ".avi")
        )
        line["link_manifest_equals_convert"] = bool(linked.equals(manifests["convert"]))
        line["command"] = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        emit(line, RESULTS if args.save else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
