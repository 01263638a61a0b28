"""``echoclip preprocess``: decode a manifest's videos once into webdataset shards."""

from __future__ import annotations

import argparse

HELP = "decode the videos of a manifest into resumable webdataset shards of uint8 clips"
EXAMPLE = "echoclip preprocess --manifest runs/sim/manifest.parquet --out runs/shards --size 112 --frames 16"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest (.parquet or .csv) listing the videos")
    parser.add_argument("--out", required=True, help="folder for the shards; run again to resume")
    parser.add_argument("--split", default=None, help="only rows of this split (train, val, test)")
    parser.add_argument("--size", type=int, default=112, help="clip height and width in pixels (default 112)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--fps", type=float, default=None, help="resample clips to this frame rate")
    parser.add_argument("--shard-size", type=int, default=256, help="videos per shard (default 256)")
    parser.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel")
    parser.add_argument(
        "--default-fps", type=float, default=None, help="frame rate of videos whose header has no timing"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from echoclip.data.shards import ShardConfig, write_shards

    config = ShardConfig(
        image_size=args.size,
        num_frames=args.frames,
        fps=args.fps,
        shard_size=args.shard_size,
        split=args.split,
    )
    read_options = {"fps": args.default_fps} if args.default_fps else None
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    summary = write_shards(
        args.manifest, args.out, config, workers=args.workers, progress=not quiet, read_options=read_options
    )
    print(summary.line())
    return 0
