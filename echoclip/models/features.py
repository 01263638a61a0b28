"""Features along time from any video tower: what the periodic loss and the probes read.

A ``frames`` tower gives one feature vector per frame already. A ``videomae`` tower
gives tokens on a ``(t, h, w)`` grid; the features of time step ``i`` are the mean of
its (visible) tokens, so ``t = num_frames / tubelet_size`` steps. Towers without a
time axis (``torchvision``) give one step.
"""

from __future__ import annotations

import torch
from torch import nn

from echoclip.errors import ModelError


def tower_kind(tower: nn.Module) -> str:
    config = getattr(tower, "config", None)
    kind = getattr(config, "kind", None)
    if kind is None:
        raise ModelError(f"{type(tower).__name__} is not a video tower (it has no config.kind)")
    return str(kind)


def video_tower(model_or_tower: nn.Module) -> nn.Module:
    """The video tower of an ``EchoCLIP`` model, or the tower itself."""
    return getattr(model_or_tower, "video_tower", model_or_tower)


def time_steps(tower: nn.Module) -> int:
    """Length of the time axis of :func:`time_features` for this tower."""
    cfg = tower.config  # type: ignore[attr-defined]
    kind = tower_kind(tower)
    if kind == "videomae":
        return cfg.num_frames // cfg.tubelet_size
    if kind == "frames":
        return cfg.num_frames
    return 1


def frames_per_step(tower: nn.Module) -> int:
    """Input frames behind one step of :func:`time_features` (the tubelet size for a ViT)."""
    return tower.config.num_frames // time_steps(tower)  # type: ignore[attr-defined]


def videomae_tokens_by_time(
    tokens: torch.Tensor, bool_masked_pos: torch.Tensor | None, grid_t: int
) -> torch.Tensor:
    """Mean of the visible tokens of each time step: ``[B, N_visible, C] -> [B, t, C]``.

    Tokens are time-major (as the VideoMAE patch embedding flattens them) and the
    encoder keeps the visible ones in order, so their time index is known from the mask.
    """
    b, _, c = tokens.shape
    if bool_masked_pos is None:
        return tokens.reshape(b, grid_t, -1, c).mean(dim=2)
    n = bool_masked_pos.shape[1]
    per_step = n // grid_t
    step_of_token = torch.arange(n, device=tokens.device) // per_step
    visible = ~bool_masked_pos
    step = step_of_token.expand(b, n)[visible].reshape(b, -1)  # [B, N_visible]
    one_hot = torch.nn.functional.one_hot(step, grid_t).to(tokens.dtype)  # [B, N_visible, t]
    sums = one_hot.transpose(1, 2) @ tokens  # [B, t, C]
    counts = one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
    return sums / counts


def time_features(
    tower: nn.Module, x: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, 3, T, H, W] -> [B, steps, C]``: the tower's features along time."""
    kind = tower_kind(tower)
    if kind == "videomae":
        tokens = tower.forward_features(x, bool_masked_pos)  # type: ignore[operator]
        return videomae_tokens_by_time(tokens, bool_masked_pos, time_steps(tower))
    if bool_masked_pos is not None:
        raise ModelError(f"a {kind!r} tower takes no token mask")
    feats = tower.forward_features(x)  # type: ignore[operator]
    return feats if feats.ndim == 3 else feats[:, None]


def tokens(tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every token of the tower, ``[B, N, C]``: ViT tokens, frame features, or one pooled vector."""
    feats = tower.forward_features(x)  # type: ignore[operator]
    return feats if feats.ndim == 3 else feats[:, None]


def pooled_features(steps: torch.Tensor) -> torch.Tensor:
    """``[B, t, C] -> [B, 2C]``: mean and standard deviation over time.

    The spread over time is what moves through the beat (the ventricle filling and
    emptying), which a mean over frames cannot show.
    """
    if steps.shape[1] == 1:
        return torch.cat([steps[:, 0], torch.zeros_like(steps[:, 0])], dim=-1)
    return torch.cat([steps.mean(dim=1), steps.std(dim=1, unbiased=False)], dim=-1)
