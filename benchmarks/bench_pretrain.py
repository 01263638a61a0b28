"""Masked-modelling step time versus an all-token encoder step on the same clips.

The encoder of masked video modelling sees only the visible tokens (a tenth at mask
ratio 0.9); the decoder sees all of them but is narrow. This measures one training
step (forward + backward) of the pretraining model at ``--ratio`` and one step of
the same encoder on every token of the same clips (the baseline, with a trivial loss
on its tokens), alternating the two so that a shared machine slows both alike.

Prints one JSON line: both step times, their ratio (target <= 0.35) and clips/s.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/bench_pretrain.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time

import torch


def simulated_clips(batch: int, preprocess) -> torch.Tensor:
    from echoclip.data.synthetic.study import simulate_study
    from echoclip.data.transforms import VideoTransform

    transform = VideoTransform(preprocess)
    size = max(64, preprocess.image_size)
    return torch.stack(
        [transform(simulate_study(i, size=size, frames=64, fps=50.0).video) for i in range(batch)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="echoclip-vit-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mask", default="tube")
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--periodic-weight", type=float, default=0.1)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    from echoclip.models.clip_model import default_preprocess
    from echoclip.models.factory import get_model_config
    from echoclip.models.video_towers import build_video_tower
    from echoclip.pretrain.objectives import PretrainConfig, build_objective

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_model_config(args.model)
    tower = build_video_tower(cfg.video, cfg.embed_dim)
    options = PretrainConfig(mask=args.mask, ratio=args.ratio, periodic_weight=args.periodic_weight)
    model, objective = build_objective(tower, options, seed=0)
    clips = simulated_clips(args.batch, default_preprocess(cfg))
    batch = objective.collate([{"video": c, "index": i} for i, c in enumerate(clips)], epoch=0)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    )

    def pretrain_step() -> float:
        t = time.perf_counter()
        with autocast:
            loss, _ = objective.loss(model, batch, step=1)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    def encoder_step() -> float:
        t = time.perf_counter()
        with autocast:
            loss = tower.forward_features(clips).float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for _ in range(2):  # warm-up: allocations, kernel choice
        pretrain_step()
        encoder_step()
    masked, full = [], []
    for _ in range(args.repeats):
        masked.append(pretrain_step())
        full.append(encoder_step())
    t_masked, t_full = statistics.median(masked), statistics.median(full)
    print(
        json.dumps(
            {
                "bench": "pretrain",
                "model": args.model,
                "tokens": tower.num_patches if hasattr(tower, "num_patches") else None,
                "batch": args.batch,
                "mask": args.mask,
                "ratio": args.ratio,
                "periodic_weight": args.periodic_weight,
                "precision": args.precision,
                "pretrain_step_s": round(t_masked, 4),
                "encoder_all_tokens_step_s": round(t_full, 4),
                "step_ratio": round(t_masked / t_full, 3),
                "target_ratio": 0.35,
                "pretrain_clips_per_s": round(args.batch / t_masked, 2),
                "encoder_all_tokens_clips_per_s": round(args.batch / t_full, 2),
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
