"""``echoclip demo``: the end-to-end demonstration on simulated data.

For now it simulates a cohort and shows what was made: the data set every later stage
of the demo (tokenizer, pretraining, contrastive training, zero-shot, retrieval) runs on.
"""

from __future__ import annotations

import argparse

HELP = "run the demo on simulated echo studies (for now: simulate a data set and describe it)"
EXAMPLE = "echoclip demo --out runs/demo --n 200 --seed 0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--n", type=int, default=200, help="number of simulated studies (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from echoclip.cli.simulate import summarize
    from echoclip.data.synthetic import simulate_dataset

    data = simulate_dataset(
        Path(args.out) / "data", n=args.n, seed=args.seed, overwrite=True, progress=not args.quiet
    )
    manifest = pd.read_parquet(data / "manifest.parquet")
    studies = manifest.drop_duplicates("study_id")
    flags = [c for c in studies if c.startswith(("device_", "finding_"))]
    print(f"data set: {data}")
    print(f"  FileList.csv, VolumeTracings.csv, manifest.parquet, {len(manifest)} videos in Videos/")
    print(f"  EF < 50 %: {int((studies['ef'] < 50).sum())} of {len(studies)} studies")
    for column in flags:
        print(f"  {column:<30} {int(studies[column].sum()):>5}")
    print("an example report:")
    print("  " + studies["report"].iloc[0].replace("\n", "\n  "))
    print(summarize(manifest, data))
    return 0
