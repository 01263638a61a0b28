"""Contrastive pretraining of the per-frame CNN tower: views, losses, learning."""

from __future__ import annotations

import torch

from echoclip.models.config import VideoTowerConfig
from echoclip.models.frames import FrameTower
from echoclip.pretrain.objectives import PretrainConfig, sample_generator
from echoclip.pretrain.ssl_frames import FrameSSLModel, FrameSSLObjective
from echoclip.pretrain.views import augment_view, nt_xent

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


def _setup(**options):
    torch.manual_seed(0)
    tower = FrameTower(TOWER, 16)
    config = PretrainConfig(projection_dim=16, **options)
    return tower, FrameSSLModel(tower, config), FrameSSLObjective(config, seed=0)


def test_views_are_seeded_and_keep_the_shape():
    clip = BeatingClips(1, frames=16)[0]["video"]
    a = augment_view(clip, sample_generator(0, 0, 5))
    b = augment_view(clip, sample_generator(0, 0, 5))
    c = augment_view(clip, sample_generator(0, 1, 5))
    assert a.shape == clip.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_nt_xent_rewards_matching_pairs():
    a = torch.randn(8, 16)
    assert float(nt_xent(a, a + 0.01 * torch.randn(8, 16), 0.1)) < 0.1
    assert float(nt_xent(a, torch.randn(8, 16), 0.1)) > 1.0


def test_collate_gives_two_views_and_their_periods():
    _, _, objective = _setup()
    data = BeatingClips(4, frames=16, noise=0.1)
    batch = objective.collate([data[i] for i in range(4)] + [None], epoch=0)
    assert batch["video"].shape == (4, 2, 3, 16, 32, 32)
    assert batch["period"].shape == (4, 2) and torch.isfinite(batch["period"]).any()
    assert objective.collate([None, None], epoch=0) is None


def test_both_terms_fall():
    tower, model, objective = _setup(periodic_weight=1.0)
    data = BeatingClips(8, frames=16, noise=0.1)
    batch = objective.collate([data[i] for i in range(8)], epoch=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss, figures = objective.compute(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(figures)
    assert history[0]["periodic_anchors"] > 0
    assert history[-1]["invariance"] < 0.5 * history[0]["invariance"]
    assert history[-1]["periodic"] < 0.8 * history[0]["periodic"]
    # the clip embedding is the tower's own forward
    x = batch["video"][:, 0]
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.clip_head(tower(x)), model(x)["clip"], atol=1e-5)
