"""``echoclip simulate``: write a simulated EchoNet-Dynamic folder with reports, or a DICOM export."""

from __future__ import annotations

import argparse

HELP = "simulate echo studies with reports and ground truth (EchoNet-Dynamic folder + manifest.parquet)"
EXAMPLE = (
    "echoclip simulate --out data/sim --n 200 --seed 0 --views A4C,A2C,PLAX,PSAX "
    "--videos-per-view 1-3 --view-missing 0.1"
)

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
        "--views",
        nargs="+",
        default=["A4C"],
        help=f"views of each study, separated by spaces or commas, from {','.join(_VIEWS)} (default A4C)",
    )
    parser.add_argument(
        "--videos-per-view",
        "--videos-per-study",
        dest="videos_per_view",
        default="1",
        help="videos of each view a study holds: a count (2) or a range drawn per study and view "
        "(1-3: repeated acquisitions of the same heart); default 1",
    )
    parser.add_argument(
        "--view-missing",
        type=float,
        default=0.0,
        help="probability that a study lacks a view (a study keeps at least one); default 0",
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

    views = parse_views(args.views)
    videos_per_view = parse_count_range(args.videos_per_view)
    if args.format == "dicom-archive":
        if args.realism != "clean":
            raise ConfigError("--realism applies to --format echonet only; the DICOM export is clean")
        if videos_per_view != (1, 1) or args.view_missing:
            raise ConfigError("--videos-per-view and --view-missing apply to --format echonet only")
        out = simulate_archive(
            args.out,
            n=args.n,
            seed=args.seed,
            size=args.size,
            frames=args.frames,
            fps=args.fps,
            views=views,
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
        views=views,
        codec=args.codec,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
        realism=args.realism,
        videos_per_view=videos_per_view,
        view_missing=args.view_missing,
    )
    summary = summarize(pd.read_parquet(out / "manifest.parquet"), out)
    print(summary if args.realism == "clean" else f"{summary}, realism {args.realism}")
    return 0


def parse_views(tokens: list[str]) -> tuple[str, ...]:
    """Views from ``A4C PLAX`` or ``A4C,PLAX`` (any case), checked against the simulator's."""
    from echoclip.errors import ConfigError

    views = tuple(v.strip().upper() for token in tokens for v in token.split(",") if v.strip())
    unknown = [v for v in views if v not in _VIEWS]
    if unknown or not views:
        raise ConfigError(
            f"--views: unknown or no views {unknown or list(tokens)}; known: {','.join(_VIEWS)}"
        )
    return views


def parse_count_range(text: str) -> tuple[int, int]:
    """``(lo, hi)`` from ``"2"`` or ``"1-3"`` (1 <= lo <= hi)."""
    from echoclip.errors import ConfigError

    parts = text.strip().split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        lo, hi = 0, 0
    if not 1 <= lo <= hi:
        raise ConfigError(
            f"--videos-per-view: expected a count (2) or a range lo-hi with 1 <= lo <= hi (1-3), got {text!r}"
        )
    return lo, hi


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
