"""Fine-tuned EF error of the three heads, frozen and unfrozen, against the mean predictor.

Simulates an EchoNet-Dynamic folder (``FileList.csv`` + ``Videos/``; ``--train``
training and ``--test`` test studies, split by patient), then fine-tunes the video
encoder of ``--init`` with each head (``linear``, ``attentive``, ``stfnet``), once
with the encoder frozen and once unfrozen, and scores each on the test studies. The
mean-predictor baseline predicts the training mean EF for every test study. When
``--init`` is a model directory with a tokenizer, its zero-shot EF error on the same
test studies is reported too.

Prints one JSON line: per run ``{head}.{frozen|unfrozen}`` the test MAE, R², EF<50 AUC
and seconds (wall and CPU), plus the baseline and the setup. Each video is decoded once
for all six runs.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/bench_finetune.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def simulate_echonet(
    root: Path, train: int, test: int, size: int, frames: int, fps: float, seed: int
) -> Path:
    """An EchoNet-Dynamic folder of ``train`` + ``test`` simulated studies, split by patient."""
    from echoclip.data.synthetic import simulate_dataset

    sim = simulate_dataset(
        root / "sim", n=train + test, seed=seed, size=size, frames=frames, fps=fps, progress=False
    )
    manifest = pd.read_parquet(sim / "manifest.parquet")
    files = pd.read_csv(sim / "FileList.csv")
    patients = manifest["patient_id"].drop_duplicates().sample(frac=1.0, random_state=seed).tolist()
    counts = manifest.groupby("patient_id").size()
    in_train, total = set(), 0
    for p in patients:
        if total + counts[p] <= train:
            in_train.add(p)
            total += counts[p]
    files["Split"] = np.where(manifest["patient_id"].isin(in_train), "TRAIN", "TEST")
    folder = root / "EchoNet-Dynamic"
    folder.mkdir()
    shutil.move(str(sim / "Videos"), folder / "Videos")
    files.to_csv(folder / "FileList.csv", index=False)
    shutil.rmtree(sim)
    return folder


def zero_shot_mae(init: str, data: Path) -> float | None:
    """Zero-shot EF MAE of a model directory on the test studies (``None`` for other inits)."""
    import echoclip
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform

    if not (Path(init) / "config.json").is_file():
        return None
    model = echoclip.load_model(init)
    tokenizer = echoclip.get_tokenizer(init)
    test = open_dataset(data, "test", VideoTransform(model.preprocess_config))
    table = echoclip.zero_shot(model, tokenizer, test, "ejection_fraction")
    truth = test.table.set_index("study_id")["ef"]
    pred = table.set_index("study_id")["ejection_fraction"]
    return float((pred - truth.loc[pred.index]).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--init", default="echoclip-tiny", help="model config name, model directory or encoder"
    )
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--heads", default="linear,attentive,stfnet")
    parser.add_argument("--frozen-steps", type=int, default=150)
    parser.add_argument("--unfrozen-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate with the encoder unfrozen")
    parser.add_argument("--frozen-lr", type=float, default=1e-2, help="learning rate of a head alone")
    parser.add_argument("--layer-decay", type=float, default=None)
    parser.add_argument("--test-clips", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()

    from echoclip.finetune.finetune import finetune
    from echoclip.loop.config import LoopConfig

    torch.set_num_threads(args.threads)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = simulate_echonet(work, args.train, args.test, args.size, args.frames, args.fps, args.seed)
    files = pd.read_csv(data / "FileList.csv")
    result: dict = {
        "benchmark": "finetune",
        "init": args.init,
        "n_train": int((files["Split"] == "TRAIN").sum()),
        "n_test": int((files["Split"] == "TEST").sum()),
        "size": args.size,
        "batch_size": args.batch_size,
        "frozen_steps": args.frozen_steps,
        "unfrozen_steps": args.unfrozen_steps,
        "lr": args.lr,
        "frozen_lr": args.frozen_lr,
        "layer_decay": args.layer_decay,
        "test_clips": args.test_clips,
        "simulate_s": round(time.perf_counter() - t0, 1),
    }
    cache: dict = {}  # every video decoded once for all runs
    for head in args.heads.split(","):
        for frozen in (True, False):
            name = f"{head}.{'frozen' if frozen else 'unfrozen'}"
            config = LoopConfig(
                out=str(work / "runs" / name),
                steps=args.frozen_steps if frozen else args.unfrozen_steps,
                batch_size=args.batch_size,
                lr=args.frozen_lr if frozen else args.lr,
                weight_decay=0.05,
                warmup_steps=10,
                checkpoint_every=10_000,
                log_every=10,
                tensorboard=False,
                progress=False,
                seed=args.seed,
            )
            t, cpu = time.perf_counter(), time.process_time()
            run = finetune(
                data,
                config,
                init=args.init,
                head=head,
                freeze=frozen,
                layer_decay=None if frozen else args.layer_decay,
                test_clips=args.test_clips,
                video_cache=cache,
                plots=False,
            )
            m = run.metrics
            result[name] = {
                "mae": round(m["ef"]["mae"], 2),
                "r2": round(m["ef"]["r2"], 3),
                "ef50_auc": round(m["ef50"]["auc"], 3),
                "seconds": round(time.perf_counter() - t, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
            }
            result["mean_predictor_mae"] = round(m["baseline"]["ef_mae_mean_predictor"], 2)
    zero_shot = zero_shot_mae(args.init, data)
    if zero_shot is not None:
        result["zero_shot_mae"] = round(zero_shot, 2)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    result["total_cpu_s"] = round(time.process_time(), 1)
    result["threads"] = args.threads
    result["machine"] = platform.machine()
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
