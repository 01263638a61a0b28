"""Frozen-feature probes: held-out patients, learning a visible label, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoclip.errors import DataError
from echoclip.models.config import VideoTowerConfig
from echoclip.models.encoders import save_encoder
from echoclip.models.frames import FrameTower
from echoclip.pretrain.probe import attentive_probe, probe, probe_against_random, split_by_group

from .clips import BeatingClips

TOWER = VideoTowerConfig(
    kind="frames",
    image_size=32,
    num_frames=16,
    backbone="convnet",
    backbone_kwargs={"widths": [8, 16, 32]},
    aggregation="stats",
    hidden=32,
)


def test_split_keeps_patients_on_one_side():
    groups = np.repeat(np.arange(20), 3).astype(str)
    train, test = split_by_group(groups, 0.3, seed=0)
    assert set(groups[train]).isdisjoint(groups[test])
    assert len(train) + len(test) == 60 and 0.2 < len(test) / 60 < 0.4
    with pytest.raises(DataError, match="two patients"):
        split_by_group(np.array(["a", "a"]), 0.3, seed=0)


def test_attentive_probe_learns_a_token_function():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(200, 6, 8, generator=g)
    y = (tokens[:, :, 0].mean(dim=1) * 20 + 50).numpy()  # the label is a feature summed over tokens
    pred = attentive_probe(tokens[:150], y[:150], tokens[150:], steps=300, seed=0, lr=1e-2)
    r2 = 1 - ((pred - y[150:]) ** 2).mean() / y[150:].var()
    assert r2 > 0.5  # the attention pool must spread its weight over every token


def test_probe_reads_ef_from_motion_features():
    torch.manual_seed(0)
    results = probe(
        FrameTower(TOWER, 16),
        BeatingClips(80, frames=16, noise=0.1),
        target="ef",
        attentive_steps=200,
        precision="fp32",
    )
    assert results["n_train"] + results["n_test"] == 80
    assert results["ridge.r2"] > 0.5 and results["ridge.mae"] < 10
    assert set(results) >= {"attentive.r2", "attentive.mae"}


def test_probe_against_random_from_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    save_encoder(FrameTower(TOWER, 16), tmp_path, info={})
    both = probe_against_random(tmp_path, BeatingClips(30, frames=16), attentive=False)
    assert set(both) == {"pretrained", "random"}
    assert both["pretrained"]["ridge.r2"] != both["random"]["ridge.r2"]


def test_probe_needs_labels():
    data = [dict(BeatingClips(1, frames=16)[0], ef=float("nan"))]
    with pytest.raises(DataError, match="finite 'ef'"):
        probe(FrameTower(TOWER, 16), data)
