"""Run one training step of the toy model; launched as several processes by test_distributed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from toy import ToyClip, ToyClips, toy_tokenizer  # noqa: E402

from echoclip.train.config import TrainConfig  # noqa: E402
from echoclip.train.contrastive import ContrastiveObjective  # noqa: E402
from echoclip.train.loop import Trainer  # noqa: E402


def main(out: str, batch_size: int) -> None:
    torch.manual_seed(0)
    model = ToyClip()
    objective = ContrastiveObjective(toy_tokenizer, context_length=8, sentence_dropout=0.0)
    config = TrainConfig(
        out=out,
        steps=1,
        batch_size=batch_size,
        lr=1e-3,
        warmup_steps=0,
        log_every=1,
        checkpoint_every=100,
        tensorboard=False,
        progress=False,
        grad_clip=0.0,
    )
    Trainer(model, objective, ToyClips(32), config).fit()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
