"""``echoclip merge``: join the parts that independent ranks wrote into one output.

Jobs started with ``--rank R --world-size N`` (a SLURM array, machines that never meet)
each write ``OUT/parts/rank-R``; this writes what one process would have written:
one ``shards.json`` for ``echoclip preprocess``, one pair of embedding stores for
``echoclip embed``. Under torchrun rank 0 does the same by itself.
"""

from __future__ import annotations

import argparse

HELP = "join the parts written by ranks of `preprocess` or `embed` (--rank/--world-size) into one output"
EXAMPLE = "echoclip merge runs/emb"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the OUT folder the ranks wrote to (it holds parts/rank-*)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from echoclip.data.shards import STATE_FILE, merge_shards
    from echoclip.errors import DataError
    from echoclip.models.embed import PART_FILE, merge_embeddings
    from echoclip.ranks import PARTS

    out = Path(args.out)
    parts = out / PARTS
    if any(parts.glob(f"rank-*/{STATE_FILE}")):
        print(f"merge: {merge_shards(out).line()}")
    elif any(parts.glob(f"rank-*/{PART_FILE}")):
        done = merge_embeddings(out)
        note = f" ({done.skipped} unreadable, listed in {out / 'skipped.csv'})" if done.skipped else ""
        print(f"merge: {done.videos:,} videos{note} and {done.reports:,} reports -> {out} (dim {done.dim})")
    else:
        raise DataError(f"{out}: no parts to merge (expected {PARTS}/rank-*/ from `preprocess` or `embed`)")
    return 0
