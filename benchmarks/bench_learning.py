"""Does contrastive training learn within a CPU budget? Retrieval on held-out studies against chance.

Simulates 640 studies, holds out 128 of them by patient, learns the tokenizer, then
runs ``echoclip train`` with ``echoclip-tiny`` and the ``tiny-cpu`` recipe for
``--steps`` steps, validating every 100 steps. Prints one JSON line: the training
seconds, validation video->report recall@5 at each validation (and the ratio to chance,
5 / 128), the smoothed training loss per 50 steps and whether it falls monotonically.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/bench_learning.py
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd


def _cli(*args: object) -> None:
    # the commands' summary lines stay off stdout, which carries only this benchmark's JSON line
    subprocess.run(
        [sys.executable, "-m", "echoclip.cli.main", "-q", *map(str, args)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--held-out", type=int, default=128)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    from echoclip.data.synthetic import simulate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = simulate_dataset(
            root / "sim",
            n=args.train + args.held_out,
            seed=args.seed,
            size=112,
            frames=64,
            fps=50.0,
            progress=False,
        )
        table = pd.read_parquet(sim / "manifest.parquet")
        patients = table.drop_duplicates("patient_id")["patient_id"].to_numpy()
        np.random.default_rng(0).shuffle(patients)
        held, n = set(), 0
        for p in patients:  # whole patients into the held-out split, up to --held-out studies
            k = int((table["patient_id"] == p).sum())
            if n + k <= args.held_out:
                held.add(p)
                n += k
        table["split"] = np.where(table["patient_id"].isin(held), "val", "train")
        table.to_parquet(sim / "manifest.parquet")
        _cli("tokenizer", "train", "--corpus", sim / "manifest.parquet", "--out", root / "tok")
        start = time.perf_counter()
        _cli(
            "train", "--data", sim, "--model", "echoclip-tiny", "--tokenizer", root / "tok",
            "--config", "configs/recipes/tiny-cpu.toml", "--out", root / "clip", "--steps", args.steps,
            "--val-every", 100, "--preload", "--seed", 0,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        with open(root / "clip" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))

    held_out = int(sum(table["split"] == "val"))
    chance = 5 / held_out
    recall5 = {
        int(r["step"]): round(float(r["val/video_to_report.recall@5"]), 4)
        for r in rows
        if r.get("val/video_to_report.recall@5")
    }
    losses = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    smoothed = [
        round(float(np.mean([v for s, v in losses if w - 50 < s <= w])), 3)
        for w in range(50, losses[-1][0] + 1, 50)
    ]
    print(
        json.dumps(
            {
                "bench": "learning",
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "train_studies": int(sum(table["split"] == "train")),
                "held_out_studies": held_out,
                "steps": args.steps,
                "train_command_s": round(seconds, 1),
                "recall@5": recall5,
                "chance_recall@5": round(chance, 4),
                "final_recall@5_over_chance": round(recall5[max(recall5)] / chance, 2),
                "loss_per_50_steps": smoothed,
                "loss_falls_monotonically": all(b < a for a, b in zip(smoothed, smoothed[1:], strict=False)),
            }
        )
    )


if __name__ == "__main__":
    main()
