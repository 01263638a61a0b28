"""How low the masked-modelling loss can go on simulated echoes: the per-patch-normalised
reconstruction loss of oracles that know the hidden video without its speckle.

The simulator multiplies the rendered anatomy by speckle (``render._speckle``). This
renders each study twice with the same random draws, once as is and once with the
speckle replaced by its mean (1), and puts both through the ViT's transform. For each
tubelet of the speckled clip, the target is what pretraining predicts
(:func:`echoclip.pretrain.mae.patch_targets`, pixels normalised by the tubelet's own
mean and std); an oracle predicts it by the best linear fit from the speckle-free
tubelet, sharp or blurred by a Gaussian of ``--blur`` pixels (an oracle that knows
the anatomy only to within a few pixels). The baseline in the same run is the loss
of predicting zeros, which is where training starts.

Prints one JSON line: the zero-predictor loss and each oracle's loss as a fraction of
it. ``echoclip pretrain`` reaching a fraction f means its reconstructions are about as
good as the oracle's whose fraction is f.

    python benchmarks/bench_recon_floor.py --clips 40
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from unittest import mock

import numpy as np
import torch


def tubelets(video_frames: np.ndarray, transform, patch: int, tubelet: int, norm_pix: bool) -> np.ndarray:
    """``[N, ts*p*p*C]``: every tubelet of one clip as pretraining sees it (float64), normalised
    by its own mean and std as the loss's targets (``norm_pix``) or raw."""
    from echoclip.data.video import Video
    from echoclip.pretrain.mae import patch_targets, patchify

    x = transform(Video(video_frames, 25.0, {}))[None]  # [1, C, T, H, W]
    patches = patchify(x.float(), patch, tubelet)
    everything = torch.ones(patches.shape[:2], dtype=torch.bool)
    return patch_targets(patches, everything, norm_pix=norm_pix)[0].double().numpy()


def oracle_loss(target: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per tubelet, the mean squared error of the least-squares fit ``a * clean + b``."""
    tc = target - target.mean(axis=1, keepdims=True)
    cc = clean - clean.mean(axis=1, keepdims=True)
    cov = (tc * cc).sum(axis=1)
    var = (cc * cc).sum(axis=1)
    slope = np.divide(cov, var, out=np.zeros_like(cov), where=var > 1e-12)
    residual = tc - slope[:, None] * cc
    return (residual**2).mean(axis=1)  # the intercept b takes each tubelet's mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="echoclip-vit-tiny")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--blur", type=float, nargs="*", default=[2.0, 4.0, 8.0])
    args = parser.parse_args()

    from scipy.ndimage import gaussian_filter

    from echoclip.data.synthetic import render
    from echoclip.data.synthetic.study import simulate_study
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.clip_model import default_preprocess
    from echoclip.models.factory import get_model_config

    cfg = get_model_config(args.model)
    transform = VideoTransform(default_preprocess(cfg))
    patch, tubelet, size = cfg.video.patch_size, cfg.video.tubelet_size, cfg.video.image_size
    speckle = render._speckle

    def no_speckle(*a, **k):  # draws as the real one does, so every later draw is the same
        return np.ones_like(speckle(*a, **k))

    zero, oracles = [], {0.0: [], **{b: [] for b in args.blur}}
    for seed in range(args.clips):
        noisy = simulate_study(seed, size=size, frames=32, fps=25.0).video.frames
        with mock.patch.object(render, "_speckle", no_speckle):
            clean = simulate_study(seed, size=size, frames=32, fps=25.0).video.frames
        target = tubelets(noisy, transform, patch, tubelet, norm_pix=True)
        zero.append((target**2).mean(axis=1))
        for blur in oracles:
            smooth = gaussian_filter(clean.astype(np.float32), (0, blur, blur, 0)) if blur else clean
            smooth = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)
            clean_tubelets = tubelets(smooth, transform, patch, tubelet, norm_pix=False)
            oracles[blur].append(oracle_loss(target, clean_tubelets))
    zero_loss = float(np.concatenate(zero).mean())
    figures = {
        f"oracle_{'sharp' if not b else f'blur{b:g}px'}_fraction": round(
            float(np.concatenate(v).mean()) / zero_loss, 3
        )
        for b, v in oracles.items()
    }
    print(
        json.dumps(
            {
                "bench": "recon_floor",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, torch {torch.__version__}",
                "model": args.model,
                "clips": args.clips,
                "tubelets": int(sum(len(z) for z in zero)),
                "zero_predictor_loss": round(zero_loss, 4),
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
