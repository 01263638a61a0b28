"""Train the tiny model at study level for a few steps; launched as several processes by
test_study_level's two-rank test.

Usage: study_dist_worker.py DATA OUT BATCH_SIZE POOLING
"""

from __future__ import annotations

import sys

import torch

from echoclip.train.clip import train_clip
from echoclip.train.config import ContrastiveConfig, TrainConfig


def main(data: str, out: str, batch_size: int, pooling: str) -> None:
    config = TrainConfig(
        out=out,
        steps=2,
        batch_size=batch_size,
        lr=1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        precision="fp32",  # exact sums: bf16 rounds a batch of 2B differently from two of B
        log_every=1,
        checkpoint_every=100,
        tensorboard=False,
        progress=False,
        seed=0,
        level="study",
        videos_per_study=3,
        study_pooling=pooling,
        contrastive=ContrastiveConfig(sentence_dropout=0.0),
    )
    train_clip(
        data,
        config,
        # a transformer video tower: echoclip-tiny's batch norm sees each rank's batch apart
        model="echoclip-vit-tiny",
        model_overrides={"video": {"image_size": 32, "layers": 2}, "text": {"layers": 1}},
        val_split=None,
        ood=False,
        augment=False,
    )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
