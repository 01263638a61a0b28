"""``echoclip preprocess``: decode a manifest's videos once into webdataset shards."""

from __future__ import annotations

import argparse

from echoclip.cli.rank_options import add_rank_arguments

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
    add_rank_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import logging

    from echoclip.cli.rank_options import after_part, ranks_of
    from echoclip.data.shards import ShardConfig, merge_shards, write_shards
    from echoclip.ranks import run_parts

    config = ShardConfig(
        image_size=args.size,
        num_frames=args.frames,
        fps=args.fps,
        shard_size=args.shard_size,
        split=args.split,
    )
    read_options = {"fps": args.default_fps} if args.default_fps else None
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    ranks = ranks_of(args)

    def write():
        return write_shards(
            args.manifest,
            args.out,
            config,
            workers=args.workers,
            progress=not quiet,
            read_options=read_options,
            ranks=ranks,
        )

    if not ranks.split:
        print(write().line())
        return 0
    part, merged = run_parts(ranks, write, lambda: merge_shards(args.out))
    print(part.line())
    if merged is not None:
        print(f"merged: {merged.line()}")
    elif not ranks.can_meet:
        print(after_part(ranks, args.out))
    return 0
