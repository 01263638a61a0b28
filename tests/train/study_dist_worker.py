"""Train a small model at study level for a few steps; launched as several processes by
test_study_level's two-rank test.

Usage: study_dist_worker.py DATA OUT BATCH_SIZE POOLING
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from echoclip.train.clip import train_clip
from tests.train.test_study_level import _config


def main(data: str, out: str, batch_size: int, pooling: str) -> None:
    # the test module's settings (fp32: bf16 rounds a batch of 2B differently from two of B),
    # for two steps at 1e-3 without warm-up
    config = _config(
        Path(out), steps=2, batch_size=batch_size, lr=1e-3, warmup_steps=0, study_pooling=pooling
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
