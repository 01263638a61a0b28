"""``echoclip simulate``: write a simulated EchoNet-Dynamic folder with reports, or a DICOM export."""

from __future__ import annotations

import argparse

HELP = "simulate echo studies with reports and ground truth (EchoNet-Dynamic folder + manifest.parquet)"
EXAMPLE = "echoclip simulate --out data/sim --n 200 --seed 0 --views A4C PLAX"

_VIEWS = ("A4C", "A2C", "PLAX", "PSAX")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to create (written atomically)")
    parser.add_argument("--n", type=int, default=100, help="number of studies (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cohort (default 0)")
    parser.add_argument(
        "--size", type=int, default=112, help="frame height and width in pixels (default 112)"
    )
    parser.add_argument("--frames", type=int, default=64, help="frames per video (default 64)")
    parser.add_argument("--fps", type=float, default=50.0, help="frames per second (default 50)")
    parser.add_argument(
        "--views", nargs="+", default=["A4C"], choices=_VIEWS, help="views, one video each (default A4C)"
    )
    parser.add_argument(
        "--codec", default="mjpeg", choices=("mjpeg", "ffv1", "libx264"), help="video codec (default mjpeg)"
    )
    parser.add_argument(
        "--format",
        default="echonet",
        choices=("echonet", "dicom-archive"),
        help="echonet: AVIs + manifest (default); dicom-archive: a hospital-style DICOM export "
        "(dicom/ tree, reports.csv, truth.csv) for `echoclip ingest`",
    )
    parser.add_argument(
        "--realism",
        default="clean",
        choices=("clean", "real"),
        help="clean: textbook views and reports that state the true EF (default); real: varied "
        "acquisitions and fallible, untidy reports (observer error on the EF, ranges, abbreviations, "
        "hedges, typos, tables)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes that render videos (default 1; same data for any)"
    )


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from echoclip.data.synthetic import simulate_archive, simulate_dataset
    from echoclip.errors import ConfigError

    if args.format == "dicom-archive":
        if args.realism != "clean":
            raise ConfigError("--realism applies to --format echonet only; the DICOM export is clean")
        out = simulate_archive(
            args.out,
            n=args.n,
            seed=args.seed,
            size=args.size,
            frames=args.frames,
            fps=args.fps,
            views=tuple(args.views),
            overwrite=args.overwrite,
        )
        truth = pd.read_csv(out / "truth.csv")
        print(
            f"wrote a DICOM export of {args.n} studies ({len(truth)} files) to {out / 'dicom'}, "
            f"reports in {out / 'reports.csv'}"
        )
        return 0
    out = simulate_dataset(
        args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        frames=args.frames,
        fps=args.fps,
        views=args.views,
        codec=args.codec,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
        realism=args.realism,
    )
    summary = summarize(pd.read_parquet(out / "manifest.parquet"), out)
    print(summary if args.realism == "clean" else f"{summary}, realism {args.realism}")
    return 0


def summarize(manifest: object, out: object) -> str:
    """One line: what was written where."""
    import pandas as pd

    assert isinstance(manifest, pd.DataFrame)
    studies = manifest.drop_duplicates("study_id")
    splits = studies["split"].value_counts()
    devices = {c.removeprefix("device_"): int(studies[c].sum()) for c in studies if c.startswith("device_")}
    return (
        f"wrote {len(studies)} studies ({len(manifest)} videos, {studies['patient_id'].nunique()} patients) to {out}: "
        f"train/val/test {splits.get('train', 0)}/{splits.get('val', 0)}/{splits.get('test', 0)} studies, "
        f"EF {studies['ef'].mean():.1f} ± {studies['ef'].std(ddof=0):.1f} %, "
        + ", ".join(f"{k} {v}" for k, v in devices.items())
    )
