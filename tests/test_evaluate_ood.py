"""evaluate() reports the share of evaluated videos the model's OOD reference flags."""

from __future__ import annotations

import json

import numpy as np
import torch

from echoclip.data.datasets import open_dataset
from echoclip.data.synthetic import simulate_dataset
from echoclip.data.transforms import VideoTransform
from echoclip.evaluate import evaluate
from echoclip.models.factory import create_model
from echoclip.models.ood import fit_ood
from echoclip.tokenizer import EchoTokenizer


class Unlike(torch.utils.data.Dataset):
    """A dataset whose first ``n_unlike`` clips are replaced by noise, unlike any echo."""

    def __init__(self, dataset, n_unlike: int) -> None:
        self.dataset, self.n_unlike = dataset, n_unlike
        self.table = dataset.table

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = dict(self.dataset[i])
        if i < self.n_unlike:
            g = torch.Generator().manual_seed(i)
            item["video"] = 3 * torch.randn(item["video"].shape, generator=g)
        return item


def test_evaluate_reports_the_share_of_videos_out_of_distribution(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=EchoTokenizer())
    transform = VideoTransform(model.preprocess_config)
    data = simulate_dataset(tmp_path / "sim", n=48, seed=0, size=32, frames=32, progress=False)
    train, val = (open_dataset(data, split, transform) for split in ("train", "val"))
    shifted = Unlike(open_dataset(data, None, transform), 6)
    plain = evaluate(model, EchoTokenizer(), shifted, tmp_path / "plain", prompt_sets=["devices"])
    assert plain["out_of_distribution"] is None  # a model without a reference cannot say
    assert "Out of distribution" not in (tmp_path / "plain" / "summary.md").read_text()

    fit_ood(model, train, val)
    metrics = evaluate(model, EchoTokenizer(), shifted, tmp_path / "report", prompt_sets=["devices"])
    ood = metrics["out_of_distribution"]
    assert ood["videos"] == len(shifted) == 48 and 6 <= ood["flagged"] <= 8 and ood["expected_share"] == 0.025
    assert ood["share"] == ood["flagged"] / 48 and ood["threshold"] == model.ood_reference.threshold
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["out_of_distribution"] == ood
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"Out of distribution: {ood['flagged']} of 48 videos" in summary
    assert np.isfinite(ood["median_score"])
