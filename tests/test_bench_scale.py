"""The scale benchmark's linear probe: fitted on the training studies, scored on the test ones."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from echoclip.data.synthetic import simulate_dataset, simulate_reports
from echoclip.data.synthetic.anatomy import VIEWS
from echoclip.models.factory import create_model
from echoclip.tokenizer import EchoTokenizer


@pytest.fixture()
def bench(load_benchmark):
    return load_benchmark("bench_scale")


def test_probe_scores_each_size_finding_on_the_test_studies(bench, tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    simulate_dataset(
        tmp_path / "data", n=40, seed=2, size=32, frames=16, fps=25.0, views=VIEWS[:2], progress=False
    )
    tokenizer = EchoTokenizer.train(simulate_reports(40, seed=1))
    create_model("echoclip-tiny", tokenizer=tokenizer).save_pretrained(
        tmp_path / "clip" / "final", tokenizer=tokenizer
    )
    # half the studies to each side, so that the probe has positives to fit and to score
    manifest = tmp_path / "data" / "manifest.parquet"
    table = pd.read_parquet(manifest)
    studies = table["study_id"].drop_duplicates().tolist()
    table["split"] = ["train" if studies.index(s) % 2 else "test" for s in table["study_id"]]
    table.to_parquet(manifest)
    labels = table.drop_duplicates("study_id").set_index("study_id")

    probe = bench._probe(tmp_path)

    assert set(probe) == {*(f"{f}.auc" for f in bench.SIZE_FINDINGS), "size.mean_auc"}
    for finding in bench.SIZE_FINDINGS:
        train = labels[labels["split"] == "train"][f"finding_{finding}"].astype(bool)
        test = labels[labels["split"] == "test"][f"finding_{finding}"].astype(bool)
        scorable = min(train.sum(), (~train).sum()) >= 2 and 0 < test.sum() < len(test)
        auc = probe[f"{finding}.auc"]
        assert (auc is not None) == scorable, finding
        assert auc is None or 0.0 <= auc <= 1.0
    known = [v for k, v in probe.items() if k != "size.mean_auc" and v is not None]
    assert known, "no size finding could be fitted and scored: the test data set says nothing"
    assert probe["size.mean_auc"] == (round(sum(known) / len(known), 4) if known else None)
