"""The ``knn`` scoring method: neighbour labels by hand, through zero-shot scoring, and above chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echoclip.errors import ConfigError
from echoclip.zeroshot.neighbours import Neighbours, load_neighbours
from echoclip.zeroshot.scoring import get_scorer, knn_labels


def _unit(*rows: list[float]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_equals_a_hand_computation_on_a_tiny_store() -> None:
    refs = _unit([1, 0], [0.8, 0.6], [0, 1], [-1, 0])  # similarities to (1, 0): 1, .8, 0, -1
    video = _unit([1, 0])
    labels = np.array([1.0, 0.0, 1.0, 1.0])
    assert knn_labels(video, refs, labels, k=2) == pytest.approx([0.5])
    assert knn_labels(video, refs, labels, k=3) == pytest.approx([2 / 3])
    ef = np.array([60.0, 30.0, 45.0, 10.0])
    # similarity-weighted: (1*60 + .8*30) / 1.8; the third neighbour's weight is 0
    assert get_scorer("regression", "knn")(video, neighbours=(refs, ef), k=3) == pytest.approx([84 / 1.8])
    # a neighbour without a label is left out before ranking
    assert knn_labels(video, refs, np.array([np.nan, 0.0, 1.0, 1.0]), k=2) == pytest.approx([0.5])
    # two clips of one study: their mean is the query
    clips = np.stack([_unit([1, 0.2], [1, -0.2])])
    assert knn_labels(clips, refs, labels, k=1) == pytest.approx([1.0])
    with pytest.raises(ConfigError, match="needs reference reports"):
        get_scorer("binary", "knn")(video, None)


def test_zero_shot_scoring_with_knn_reads_each_targets_label_column() -> None:
    from echoclip.zeroshot.predict import score_embeddings
    from echoclip.zeroshot.prompts import load_prompt_set

    refs = _unit([1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9])
    labels = pd.DataFrame(
        {
            "device_pacemaker": [True, True, False, False],
            "ef": [30.0, 40.0, 60.0, 70.0],
            "split": ["train"] * 4,
        }
    )
    devices = load_prompt_set("devices")
    pacemaker = {"pacemaker": devices.targets["pacemaker"]}
    from echoclip.zeroshot.prompts import PromptSet

    ps = PromptSet("p", pacemaker, "", None)
    text_emb = {t: np.zeros(2, np.float32) for t in ps.texts()}
    videos = _unit([1, 0.05], [0.05, 1])
    df = score_embeddings(videos, ["a", "b"], ps, text_emb, methods="knn", neighbours=(refs, labels), k=2)
    assert df["pacemaker"].tolist() == pytest.approx([1.0, 0.0])
    ef = load_prompt_set("ejection_fraction")
    text_emb = {t: np.zeros(2, np.float32) for t in ef.texts()}
    df = score_embeddings(videos, ["a", "b"], ef, text_emb, methods="knn", neighbours=(refs, labels), k=2)
    assert 30 < df["ejection_fraction"][0] < 40 and 60 < df["ejection_fraction"][1] < 70
    with pytest.raises(ConfigError, match="no label column 'device_tavr'"):
        Neighbours(refs, labels).for_label("device_tavr")


def test_knn_beats_chance_on_clustered_embeddings() -> None:
    """Reports and videos of a label lie near one direction, as a trained model puts them."""
    from echoclip.metrics import binary_metrics

    rng = np.random.default_rng(0)
    dim, centre = 32, rng.standard_normal((2, 32))

    def sample(labels: np.ndarray) -> np.ndarray:
        x = centre[labels] + 1.5 * rng.standard_normal((len(labels), dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    ref_labels, test_labels = rng.integers(0, 2, 400), rng.integers(0, 2, 200)
    scores = knn_labels(sample(test_labels), sample(ref_labels), ref_labels, k=25)
    assert binary_metrics(test_labels.astype(float), scores)["auc"] > 0.9


def test_load_neighbours_joins_labels_from_the_videos_store_and_keeps_the_training_split(tmp_path) -> None:
    from echoclip.retrieval import EmbeddingStore

    reports = EmbeddingStore.create(tmp_path / "emb" / "reports", dim=2, dtype="float32")
    reports.append(
        _unit([1, 0], [0, 1], [1, 1]),
        pd.DataFrame(
            {"study_id": ["s0", "s1", "s2"], "report": ["a", "b", "c"], "split": ["train", "train", "test"]}
        ),
    )
    videos = EmbeddingStore.create(tmp_path / "emb" / "videos", dim=2, dtype="float32")
    videos.append(
        _unit([1, 0], [1, 0], [0, 1], [1, 1]),
        pd.DataFrame(
            {
                "study_id": ["s0", "s0", "s1", "s2"],
                "split": ["train", "train", "train", "test"],
                "ef": [30.0, 30.0, 60.0, 50.0],
            }
        ),
    )
    nb = load_neighbours(tmp_path / "emb")
    assert len(nb) == 2 and nb.labels["ef"].tolist() == [30.0, 60.0]
    assert len(load_neighbours(tmp_path / "emb", split=None)) == 3
    with pytest.raises(Exception, match="no embedding store here"):
        load_neighbours(tmp_path)


def test_the_zeroshot_and_evaluate_commands_score_by_neighbours(tmp_path, capsys) -> None:
    import json

    import pandas as pd
    import torch

    from echoclip.cli.main import main
    from echoclip.data.synthetic import simulate_dataset
    from echoclip.models.factory import create_model, get_tokenizer

    torch.manual_seed(0)
    sim = simulate_dataset(tmp_path / "sim", n=16, seed=0, size=32, frames=32, progress=False)
    model = tmp_path / "model"
    create_model("echoclip-tiny", tokenizer=get_tokenizer("echoclip-tiny")).save_pretrained(
        model, tokenizer=get_tokenizer("echoclip-tiny")
    )
    assert (
        main(
            [
                "embed",
                "--model",
                str(model),
                "--data",
                str(sim),
                "--split",
                "train",
                "--out",
                str(tmp_path / "emb"),
            ]
        )
        == 0
    )
    knn = ["--method", "knn", "--neighbours", str(tmp_path / "emb"), "--neighbours-k", "3"]
    args = ["--model", str(model), "--data", str(sim), "--prompts", "devices", "--split", "test"]
    assert main(["zeroshot", *args, *knn, "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["pacemaker"].between(0, 1).all() and len(table) > 0
    assert main(["evaluate", *args, *knn, "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {e["method"] for e in metrics["zero_shot"].values()} == {"knn"}
    capsys.readouterr()
    assert main(["zeroshot", *args, "--method", "knn", "--out", str(tmp_path / "q.csv")]) == 1
    assert "neighbours" in capsys.readouterr().err
