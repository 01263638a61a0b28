"""AdamW with the usual CLIP parameter groups, and a cosine schedule with linear warmup."""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters that should not shrink towards zero: temperatures and biases of the
# contrastive head, and every 1-d tensor (norm scales, biases).
NO_DECAY_NAMES = ("logit_scale", "logit_bias", "positional_embedding", "cls_token", "pos_embed")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(key in name for key in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, or over the model's own ``optimizer_groups(weight_decay)``
    when it has them (fine-tuning: layer-wise learning rates, as a group's ``lr_scale``)."""
    own = getattr(model, "optimizer_groups", None)
    if callable(own):
        groups = [{**g, "lr": lr * g.get("lr_scale", 1.0)} for g in own(weight_decay)]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base learning rate, then a cosine decay to ``min_lr_ratio`` of it."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return min_lr_ratio + (1.0 - min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
