"""``echoclip ingest``: a hospital DICOM export and its reports table -> a de-identified manifest."""

from __future__ import annotations

import argparse

HELP = "turn a DICOM export and a reports CSV into a de-identified manifest of cines (resumable)"
EXAMPLE = "echoclip ingest exports/echo --reports reports.csv --out data/echo --workers 4"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="folder of the export (a DICOMDIR in it is followed when present)")
    parser.add_argument("--reports", required=True, help="CSV of reports, keyed by accession number")
    parser.add_argument("--out", required=True, help="folder to write (a rerun resumes it)")
    parser.add_argument("--workers", type=int, default=1, help="processes ingesting studies (default 1)")
    parser.add_argument(
        "--accession-column", default="accession_number", help="key column of the reports CSV"
    )
    parser.add_argument("--report-column", default="report", help="report text column (default report)")
    parser.add_argument(
        "--uid-column", default=None, help="column of Study Instance UIDs, for reports without accession"
    )
    parser.add_argument(
        "--salt",
        default=None,
        help="secret of the id hashes (default: ECHOCLIP_DEID_SALT, else one kept in --out/salt)",
    )
    parser.add_argument(
        "--keep-no-region",
        action="store_true",
        help="also keep cines without an ultrasound region (cropped to the detected sector)",
    )
    parser.add_argument(
        "--videos",
        default="convert",
        choices=("convert", "link"),
        help="convert: each kept cine to a de-identified lossless AVI (default); link: the source "
        "DICOM hard-linked (else symlinked, else copied) into --out, no pixel decoded - de-identified "
        "when read, but the linked files keep the patient's data: keep --out where the export is kept",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="finish at most this many studies now (rerun for the rest)"
    )


def run(args: argparse.Namespace) -> int:
    from echoclip.data.ingest import IngestConfig, ingest

    config = IngestConfig(
        accession_column=args.accession_column,
        report_column=args.report_column,
        uid_column=args.uid_column,
        salt=args.salt,
        workers=args.workers,
        keep_no_region=args.keep_no_region,
        videos=args.videos,
        limit=args.limit,
        progress=not args.quiet,
    )
    result = ingest(args.root, args.reports, args.out, config)
    print(result.summary())
    return 0
