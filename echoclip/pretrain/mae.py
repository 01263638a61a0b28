"""Masked video modelling (VideoMAE) on the ``videomae`` tower, with EchoFM's periodic term.

The encoder is the tower's own ``VideoMAEModel`` (weights shared, not copied), so what
is learned here is what ``echoclip train --init`` loads. The decoder, the
encoder-to-decoder projection, the mask token and the fixed sin-cos positions are those
of transformers' ``VideoMAEForPreTraining``. Only visible tokens go through the
encoder; the loss is the mean squared error on the hidden patches, each patch
normalised by its own mean and standard deviation (``norm_pix_loss``).

Optional terms: the periodic term on the mean visible token of each time step
(``periodic_weight``), and augmentation invariance between two masked views of each
clip (``invariance_weight``, off by default here: on the tiny ViT it slowed
reconstruction and did not help a frozen probe).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoclip import atomic
from echoclip.errors import ModelError
from echoclip.models.features import videomae_tokens_by_time
from echoclip.pretrain.masking import make_mask, token_grid
from echoclip.pretrain.objectives import (
    PretrainConfig,
    PretrainObjective,
    clip_periods,
    sample_generator,
    stack_videos,
)
from echoclip.pretrain.periodic import periodic_infonce
from echoclip.pretrain.views import mlp, nt_xent, two_views, view_major


def patchify(x: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, N, C, ts*p*p]``: tubelets in VideoMAE's token order (time-major),
    pixels of each channel in the order of its patch-embedding kernel."""
    b, c, t, h, w = x.shape
    p, ts = patch_size, tubelet_size
    x = x.reshape(b, c, t // ts, ts, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # b, t', h', w', c, ts, p, p
    return x.reshape(b, (t // ts) * (h // p) * (w // p), c, ts * p * p)


def unpatchify(
    patches: torch.Tensor, shape: tuple[int, ...], patch_size: int, tubelet_size: int
) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``[B, N, C, ts*p*p] -> [B, C, T, H, W]``."""
    b, c, t, h, w = shape
    p, ts = patch_size, tubelet_size
    x = patches.reshape(b, t // ts, h // p, w // p, c, ts, p, p)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, c, t, h, w)


def patch_targets(
    patches: torch.Tensor, bool_masked_pos: torch.Tensor, norm_pix: bool = True
) -> torch.Tensor:
    """What the decoder predicts for the hidden patches: ``[B, N_masked, ts*p*p*C]``.

    With ``norm_pix`` each patch and channel is normalised by its own mean and
    (unbiased) std, as VideoMAE's ``norm_pix_loss``; pixels are laid out as the
    transformers decoder's output, ``(ts, p, p, C)``.
    """
    hidden = patches[bool_masked_pos]  # [M, C, P]
    if norm_pix:
        var, mean = torch.var_mean(hidden, dim=-1, keepdim=True)
        hidden = (hidden - mean) / (var.sqrt() + 1e-6)
    return hidden.transpose(1, 2).reshape(patches.shape[0], -1, hidden.shape[1] * hidden.shape[2])


class MaskedVideoModel(nn.Module):
    """A ``videomae`` tower plus VideoMAE's pretraining decoder and a frame projection head.

    ``forward(x, bool_masked_pos)`` returns ``{"pred": [B, N_masked, ts*p*p*3],
    "frames": [B, t, d], "clip": [B, d], "patches": [B, N, 3, ts*p*p]}``: predicted
    pixels of the hidden patches, projected features of each time step (for the
    periodic term) and of the clip (mean of the visible tokens, for the invariance
    term), and the input's pixels as patches (for the targets).
    """

    def __init__(self, tower: nn.Module, config: PretrainConfig) -> None:
        super().__init__()
        from transformers import VideoMAEConfig, VideoMAEForPreTraining
        from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

        encoder = getattr(tower, "model", None)
        if encoder is None or not hasattr(encoder, "embeddings"):
            raise ModelError("masked video modelling needs a 'videomae' video tower")
        self.tower = tower
        enc_cfg = encoder.config
        dec_cfg = VideoMAEConfig(
            **{
                k: getattr(enc_cfg, k)
                for k in (
                    "image_size",
                    "patch_size",
                    "num_channels",
                    "num_frames",
                    "tubelet_size",
                    "hidden_size",
                )
            },
            num_hidden_layers=0,  # the encoder built here is thrown away; ours is the tower's
            num_attention_heads=enc_cfg.num_attention_heads,
            decoder_hidden_size=config.decoder_width,
            decoder_num_hidden_layers=config.decoder_layers,
            decoder_num_attention_heads=config.decoder_heads,
            decoder_intermediate_size=4 * config.decoder_width,
            use_mean_pooling=True,
            norm_pix_loss=config.norm_pix_loss,
            attn_implementation="sdpa",
        )
        reference = VideoMAEForPreTraining(dec_cfg)
        self.encoder_to_decoder = reference.encoder_to_decoder
        self.mask_token = reference.mask_token
        self.decoder = reference.decoder
        num_patches = encoder.embeddings.num_patches
        self.register_buffer(
            "decoder_positions",
            get_sinusoid_encoding_table(num_patches, config.decoder_width).float(),
            persistent=False,
        )
        width = enc_cfg.hidden_size
        self.frame_head = mlp(width, config.projection_dim)
        self.clip_head = mlp(width, config.projection_dim)
        tcfg = tower.config  # type: ignore[attr-defined]
        self.patch_size, self.tubelet_size = tcfg.patch_size, tcfg.tubelet_size
        self.grid = token_grid(tcfg.num_frames, tcfg.image_size, tcfg.patch_size, tcfg.tubelet_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the tower's activations in the backward pass (the Trainer's ``grad_checkpointing``)."""
        setter = getattr(self.tower, "set_grad_checkpointing", None)
        if setter is not None:
            setter(enable)

    def encode_visible(self, patches: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        """Encoder tokens of the visible patches, ``[B, N_visible, width]``.

        The same tokens as ``tower.forward_features(x, bool_masked_pos)``, but only the
        visible patches are embedded: the tubelet embedding is a convolution whose
        stride is its kernel, i.e. a linear map of each patch.
        """
        encoder: Any = self.tower.model  # type: ignore[union-attr]
        projection = encoder.embeddings.patch_embeddings.projection
        b = patches.shape[0]
        visible = patches[~bool_masked_pos].reshape(b, -1, patches.shape[2] * patches.shape[3])
        hidden = F.linear(visible, projection.weight.flatten(1), projection.bias)
        positions = encoder.embeddings.position_embeddings.to(hidden.device, hidden.dtype)
        hidden = hidden + positions.expand(b, -1, -1)[~bool_masked_pos].reshape(b, -1, hidden.shape[-1])
        hidden = encoder.encoder(hidden).last_hidden_state
        return encoder.layernorm(hidden) if encoder.layernorm is not None else hidden

    def forward(self, x: torch.Tensor, bool_masked_pos: torch.Tensor) -> dict[str, torch.Tensor]:
        patches = patchify(x, self.patch_size, self.tubelet_size)
        tokens = self.encode_visible(patches, bool_masked_pos)
        b = tokens.shape[0]
        hidden = self.encoder_to_decoder(tokens)
        dim = hidden.shape[-1]
        pos = self.decoder_positions.to(hidden.dtype).expand(b, -1, -1)
        pos_visible = pos[~bool_masked_pos].reshape(b, -1, dim)
        pos_masked = pos[bool_masked_pos].reshape(b, -1, dim)
        full = torch.cat([hidden + pos_visible, self.mask_token.to(hidden.dtype) + pos_masked], dim=1)
        pred = self.decoder(full, pos_masked.shape[1]).logits
        steps = videomae_tokens_by_time(tokens, bool_masked_pos, self.grid[0])
        return {
            "pred": pred,
            "frames": self.frame_head(steps),
            "clip": self.clip_head(tokens.mean(dim=1)),
            "patches": patches.detach(),
        }


class MaskedVideoObjective(PretrainObjective):
    """VideoMAE reconstruction loss + ``periodic_weight`` x the periodic term, for the Trainer."""

    name = "mae"
    trained_prefixes = ("model.",)
    default_invariance_weight = 0.0

    def __init__(
        self,
        config: PretrainConfig,
        model: MaskedVideoModel,
        seed: int = 0,
        val_dataset: Any | None = None,
        image_dir: str | os.PathLike[str] | None = None,
        pixel_mean: tuple[float, ...] = (0.12, 0.12, 0.12),
        pixel_std: tuple[float, ...] = (0.19, 0.19, 0.19),
    ) -> None:
        super().__init__(config, seed=seed, val_dataset=val_dataset)
        self.grid = model.grid
        self.patch_size, self.tubelet_size = model.patch_size, model.tubelet_size
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std

    def collate(self, samples: list[Any], epoch: int) -> dict[str, torch.Tensor] | None:
        """Clips and their masks; with the invariance term two random views per clip, each
        with its own mask (``video [B, 2, 3, T, H, W]``, ``mask [B, 2, N]``)."""
        stacked = stack_videos(samples)
        if stacked is None:
            return None
        video, indices = stacked
        cfg = self.config
        generators = [sample_generator(self.seed, epoch, i) for i in indices]
        stretch = None
        if cfg.invariance_weight > 0:
            views, stretches = zip(
                *(two_views(clip, g) for clip, g in zip(video, generators, strict=True)), strict=True
            )
            video, stretch = torch.stack(views), torch.stack(stretches)
        per_clip = video.shape[1] if video.ndim == 6 else 1
        masks = torch.stack(
            [
                torch.stack([make_mask(cfg.mask, self.grid, cfg.ratio, g) for _ in range(per_clip)])
                for g in generators
            ]
        )
        batch = {"video": video, "mask": masks if video.ndim == 6 else masks[:, 0]}
        if cfg.periodic_weight > 0:
            batch["period"] = clip_periods(samples, video, stretch)
        return batch

    def compute(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        paired = batch["video"].ndim == 6  # two views per clip
        if paired:
            batch = {k: view_major(v) for k, v in batch.items()}
        device = next(model.parameters()).device
        video = batch["video"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        out = model(video, mask)
        target = patch_targets(out["patches"].float(), mask, cfg.norm_pix_loss)
        recon = F.mse_loss(out["pred"].float(), target)
        figures = {"recon": float(recon.detach())}
        loss = recon
        if cfg.periodic_weight > 0 and "period" in batch:
            periods = batch["period"] / self.tubelet_size
            periodic, anchors = periodic_infonce(out["frames"], periods, cfg.temperature)
            loss = loss + cfg.periodic_weight * periodic
            figures.update(
                periodic=float(periodic.detach()),
                periodic_anchors=float(anchors),
                period_found=float(torch.isfinite(batch["period"]).float().mean()),
            )
        if cfg.invariance_weight > 0 and paired:
            half = len(video) // 2
            invariance = nt_xent(out["clip"][:half], out["clip"][half:], cfg.temperature)
            loss = loss + cfg.invariance_weight * invariance
            figures["invariance"] = float(invariance.detach())
        figures["loss"] = float(loss.detach())
        return loss, figures

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict]:
        loss, figures = self.compute(model, batch)
        every = self.config.image_every
        if self.image_dir is not None and every > 0 and step % every == 0 and _is_main_process():
            with torch.no_grad():
                self.write_image(model, batch, self.image_dir / f"recon_step{step:08d}.png")
        return loss, figures

    # -- pictures ----------------------------------------------------------------------

    def reconstruction(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Original, masked and reconstructed frames of the first clip, ``uint8 [T, H, W, 3]`` each."""
        video, mask = batch["video"][:1], batch["mask"][:1]
        if video.ndim == 6:  # two views per clip: show the first
            video, mask = video[:, 0], mask[:, 0]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        pred = model(video.to(device), mask.to(device))["pred"].float().cpu()
        model.train(was_training)
        x = video.float()
        patches = patchify(x, self.patch_size, self.tubelet_size)  # [1, N, C, P]
        c, p = patches.shape[2], patches.shape[3]
        predicted = pred.reshape(-1, p, c).transpose(1, 2)  # decoder layout (P, C) -> (C, P)
        if self.config.norm_pix_loss:  # back to pixels with each hidden patch's true mean and std
            var, mean = torch.var_mean(patches[mask], dim=-1, keepdim=True)
            predicted = predicted * (var.sqrt() + 1e-6) + mean
        filled = patches.clone()
        filled[mask] = predicted.to(filled.dtype)
        blanked = patches.clone()
        blanked[mask] = (
            (torch.tensor(self.pixel_mean).neg() / torch.tensor(self.pixel_std)).view(c, 1).to(x.dtype)
        )
        shape = tuple(x.shape)
        return {
            "original": self._to_uint8(x),
            "masked": self._to_uint8(unpatchify(blanked, shape, self.patch_size, self.tubelet_size)),
            "reconstructed": self._to_uint8(unpatchify(filled, shape, self.patch_size, self.tubelet_size)),
        }

    def _to_uint8(self, x: torch.Tensor) -> np.ndarray:
        mean = torch.tensor(self.pixel_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.pixel_std).view(1, -1, 1, 1, 1)
        pixels = (x * std + mean).clamp(0, 1)[0].permute(1, 2, 3, 0)  # [T, H, W, C]
        return (pixels * 255).round().to(torch.uint8).numpy()

    def write_image(
        self, model: nn.Module, batch: dict[str, torch.Tensor], path: Path, columns: int = 8
    ) -> Path:
        """A PNG grid: rows original / masked / reconstructed, one column per time step (up to ``columns``)."""
        from PIL import Image

        rows = self.reconstruction(model, batch)
        t = rows["original"].shape[0]
        frames = np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))
        grid = np.concatenate(
            [
                np.concatenate([rows[name][i] for i in frames], axis=1)
                for name in ("original", "masked", "reconstructed")
            ],
            axis=0,
        )
        with atomic.writing(path) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        return path


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
