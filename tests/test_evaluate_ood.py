"""evaluate() reports the share of evaluated videos the model's OOD reference flags."""

from __future__ import annotations

import json

import numpy as np

from echoclip.evaluate import evaluate
from echoclip.models.embed import encode_videos
from echoclip.models.ood import fit_reference

from .test_evaluate import Studies, prompt_vectors
from .zeroshot.toy import toy_model


class Shifted(Studies):
    """Studies whose first ``n_unlike`` clips point away from every training study."""

    def __init__(self, n: int, seed: int, prefix: str, n_unlike: int) -> None:
        super().__init__(n, seed, prefix)
        for item in self.items[:n_unlike]:
            item["video"] = -item["video"]


def test_evaluate_reports_the_share_of_videos_out_of_distribution(tmp_path) -> None:
    train, val, test = (
        Studies(30, seed=1, prefix="r"),
        Studies(20, seed=2, prefix="v"),
        Shifted(20, 0, "t", 6),
    )
    model, tokenizer = toy_model({**prompt_vectors(), **test.reports})
    plain = evaluate(model, tokenizer, test, tmp_path / "plain", prompt_sets=["devices"])
    assert plain["out_of_distribution"] is None  # a model without a reference cannot say
    assert "Out of distribution" not in (tmp_path / "plain" / "summary.md").read_text()

    embed = lambda data: encode_videos(model, data, progress=False).features  # noqa: E731
    model.ood_reference = fit_reference(embed(train), k=3).calibrate(embed(val))
    metrics = evaluate(model, tokenizer, test, tmp_path / "report", prompt_sets=["devices"])
    ood = metrics["out_of_distribution"]
    assert ood["videos"] == len(test) == 30 and 6 <= ood["flagged"] <= 8 and ood["expected_share"] == 0.025
    assert ood["share"] == ood["flagged"] / 30 and ood["threshold"] == model.ood_reference.threshold
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["out_of_distribution"] == ood
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"Out of distribution: {ood['flagged']} of 30 videos" in summary
    assert np.isfinite(ood["median_score"])
