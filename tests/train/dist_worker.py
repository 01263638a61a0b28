"""Train the toy model for a few steps; launched as several processes by test_distributed.

Usage: dist_worker.py OUT BATCH_SIZE [STRATEGY] [STEPS] [resume]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from toy import ToyClip, ToyClips, toy_tokenizer  # noqa: E402

from echoclip.loop.trainer import Trainer  # noqa: E402
from echoclip.train.config import ContrastiveConfig, TrainConfig  # noqa: E402
from echoclip.train.contrastive import ContrastiveObjective  # noqa: E402


def main(out: str, batch_size: int, strategy: str = "ddp", steps: int = 1, resume: bool = False) -> None:
    torch.manual_seed(0)
    model = ToyClip()
    objective = ContrastiveObjective(toy_tokenizer, ContrastiveConfig(context_length=8, sentence_dropout=0.0))
    config = TrainConfig(
        out=out,
        steps=steps,
        strategy=strategy,
        batch_size=batch_size,
        lr=1e-3,
        warmup_steps=0,
        min_lr_ratio=1.0,  # a constant learning rate: a 2-step run is the start of a 3-step run
        log_every=1,
        checkpoint_every=1,
        tensorboard=False,
        progress=False,
        grad_clip=0.0,
        precision="fp32",  # exact sums: bf16 rounds a batch of 2B differently from two of B
    )
    Trainer(model, objective, ToyClips(32), config, resume=resume).fit()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        args[0],
        int(args[1]),
        args[2] if len(args) > 2 else "ddp",
        int(args[3]) if len(args) > 3 else 1,
        len(args) > 4 and args[4] == "resume",
    )
