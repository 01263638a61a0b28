"""How well two out-of-distribution scores tell real echo cines from a model's simulated data.

For a trained model (``--model``) and its data (``--data``, with train/val/test splits),
scores pydicom-data's real ultrasound cines and the simulated held-out videos two ways:

- ``embedding``: the model's saved reference (``ood.safetensors``): mean cosine
  similarity to the k nearest training embeddings, flagged below its threshold (the
  method ``zero_shot`` and the serve page use);
- ``layer_stats``: the Mahalanobis distance (shrinkage covariance) of the video tower's
  convolution outputs' channel means and standard deviations, averaged over frames, to
  those of the training videos; flagged above the 97.5th percentile of validation videos.

Prints one JSON line: per method the real cines' scores, the threshold, the validation and
test extremes and the share of test videos flagged (baseline: the same model's other
method, in the same run).

    python benchmarks/bench_ood.py --model runs/demo/clip/final --data runs/demo/data
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

REAL_FILES = ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm")


def _layer_stats(model: Any, data: Any) -> np.ndarray:
    """Channel mean and SD of every convolution of the video tower, averaged over frames."""
    import torch

    from echoclip.models.embed import encode_videos

    tower = model.video_tower
    convs = [m for m in tower.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)]
    collected: list[torch.Tensor] = []

    def hook(module: Any, inputs: Any, out: torch.Tensor) -> None:
        dims = tuple(range(2, out.ndim))
        collected.append(torch.cat([out.mean(dim=dims), out.std(dim=dims)], dim=1))

    def encode(x: torch.Tensor) -> torch.Tensor:
        collected.clear()
        tower(x)
        stats = torch.cat(collected, dim=1)  # [B*T, C] for a per-frame tower, [B, C] for a 3D one
        return stats.reshape(x.shape[0], -1, stats.shape[1]).mean(dim=1)

    handles = [c.register_forward_hook(hook) for c in convs]
    try:
        return encode_videos(
            model, data, encode=encode, normalize=False, progress=False, on_error="drop"
        ).features
    finally:
        for h in handles:
            h.remove()


def _mahalanobis(train: np.ndarray) -> Any:
    mean = train.mean(axis=0)
    centred = train - mean
    cov = centred.T @ centred / len(train)
    shrink = 0.1 * np.trace(cov) / cov.shape[0]
    precision = np.linalg.inv(cov + shrink * np.eye(cov.shape[0]))
    return lambda x: np.sqrt(np.einsum("ij,jk,ik->i", x - mean, precision, x - mean))


def _r(values: Any) -> Any:
    return [round(float(v), 3) for v in np.atleast_1d(values)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()

    from pydicom.data import get_testdata_file

    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import embed_videos
    from echoclip.models.factory import load_model
    from echoclip.models.ood import score_ood

    model = load_model(args.model).eval()
    transform = VideoTransform(model.preprocess_config)
    splits = {s: open_dataset(args.data, s, transform) for s in ("train", "val", "test")}
    real = [p for p in (get_testdata_file(n) for n in REAL_FILES) if p is not None]

    out: dict[str, Any] = {}
    if model.ood_reference is not None:
        scores = {s: score_ood(model, embed_videos(model, d, progress=False))[0] for s, d in splits.items()}
        real_scores = score_ood(model, embed_videos(model, real, progress=False))[0]
        threshold = float(model.ood_reference.threshold)
        out["embedding"] = {
            "real": _r(real_scores),
            "threshold": round(threshold, 3),
            "val_min": _r(np.nanmin(scores["val"]))[0],
            "test_min": _r(np.nanmin(scores["test"]))[0],
            "test_flagged": round(float(np.mean(scores["test"] < threshold)), 4),
            "real_flagged": int(np.sum(real_scores < threshold)),
        }
    stats = {s: _layer_stats(model, d) for s, d in splits.items()}
    distance = _mahalanobis(stats["train"])
    val, test, real_d = distance(stats["val"]), distance(stats["test"]), distance(_layer_stats(model, real))
    threshold = float(np.quantile(val, 0.975))
    out["layer_stats"] = {
        "dim": int(stats["train"].shape[1]),
        "real": _r(real_d),
        "threshold": round(threshold, 3),
        "val_max": _r(val.max())[0],
        "test_max": _r(test.max())[0],
        "test_flagged": round(float(np.mean(test > threshold)), 4),
        "real_flagged": int(np.sum(real_d > threshold)),
    }
    print(
        json.dumps(
            {
                "benchmark": "ood",
                "date": date.today().isoformat(),
                "machine": f"{platform.machine()} {platform.processor() or 'cpu'}",
                "model": str(Path(args.model)),
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
