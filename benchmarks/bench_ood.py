"""How well two out-of-distribution scores tell real echo cines from a model's simulated data.

For a trained model (``--model``) and its data (``--data``, with train/val/test splits),
scores pydicom-data's real ultrasound cines and the simulated held-out videos two ways:

- ``layer_stats`` (what ``echoclip.models.ood`` fits and the flag uses): the Mahalanobis
  distance of the video tower's layer statistics to the training videos', flagged above
  the 97.5th percentile of validation videos;
- ``embedding`` (the baseline): the mean cosine similarity of the video embedding to its
  10 nearest training embeddings, flagged below the 2.5th percentile of validation videos.

Prints one JSON line: per method the real cines' scores, the threshold, the validation and
test extremes and the share of test videos flagged, from the same model in the same run.

    python benchmarks/bench_ood.py --model runs/demo/clip/final --data runs/demo/data
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe_machine

REAL_FILES = ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm")


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
    from echoclip.models.embed import embed_videos, encode_videos
    from echoclip.models.factory import load_model
    from echoclip.models.ood import fit_ood, score_ood

    model = load_model(args.model).eval()
    transform = VideoTransform(model.preprocess_config)
    splits = {s: open_dataset(args.data, s, transform) for s in ("train", "val", "test")}
    real = [p for p in (get_testdata_file(n) for n in REAL_FILES) if p is not None]

    out: dict[str, Any] = {}
    embedded = {s: embed_videos(model, d, progress=False) for s, d in splits.items()}
    real_emb = embed_videos(model, real, progress=False)

    def knn(x: np.ndarray) -> np.ndarray:
        return np.sort(x @ embedded["train"].T, axis=1)[:, -10:].mean(axis=1)

    val, test, real_s = knn(embedded["val"]), knn(embedded["test"]), knn(real_emb)
    threshold = float(np.quantile(val, 0.025))
    out["embedding"] = {
        "real": _r(real_s),
        "threshold": round(threshold, 3),
        "val_min": _r(val.min())[0],
        "test_min": _r(test.min())[0],
        "test_flagged": round(float(np.mean(test < threshold)), 4),
        "real_flagged": int(np.sum(real_s < threshold)),
    }
    reference = fit_ood(model, splits["train"], splits["val"])

    def distance(data: Any) -> np.ndarray:
        return score_ood(model, encode_videos(model, data, progress=False).ood_features)[0]

    val, test, real_d = distance(splits["val"]), distance(splits["test"]), distance(real)
    out["layer_stats"] = {
        "dim": reference.dim,
        "real": _r(real_d),
        "threshold": round(float(reference.threshold), 3),
        "val_max": _r(val.max())[0],
        "test_max": _r(test.max())[0],
        "test_flagged": round(float(np.mean(test > reference.threshold)), 4),
        "real_flagged": int(np.sum(real_d > reference.threshold)),
    }
    print(
        json.dumps(
            {
                "benchmark": "ood",
                "date": date.today().isoformat(),
                "machine": describe_machine(),
                "model": str(Path(args.model)),
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
