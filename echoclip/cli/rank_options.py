"""The options of every command that splits its rows across ranks (``preprocess``, ``embed``)."""

from __future__ import annotations

import argparse

from echoclip.ranks import Ranks, resolve_ranks


def add_rank_arguments(p: argparse.ArgumentParser) -> None:
    """``--rank/--world-size``: independent jobs (a SLURM array) that never meet; each
    writes its part, and ``echoclip merge OUT`` joins the parts. Under torchrun the
    environment says the same and rank 0 merges by itself."""
    p.add_argument(
        "--rank",
        type=int,
        help="this job's share of the rows (0-based; with --world-size); "
        "default: torchrun's RANK, else the whole data set",
    )
    p.add_argument(
        "--world-size",
        type=int,
        help="how many jobs share the rows; each writes OUT/parts/rank-R, then run `echoclip merge OUT`",
    )


def ranks_of(args: argparse.Namespace) -> Ranks:
    """The split the flags (or torchrun's environment) ask for."""
    return resolve_ranks(args.rank, args.world_size)


def after_part(ranks: Ranks, out: str) -> str:
    """The line a rank prints when its part is written but nothing merges it here."""
    return f"{ranks.label()}: part written; once every rank is done, run `echoclip merge {out}`"
