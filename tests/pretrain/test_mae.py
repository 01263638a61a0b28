"""Masked video modelling on the videomae tower: shared weights, VideoMAE's loss, learning, images."""

from __future__ import annotations

import torch
from PIL import Image

from echoclip.models.config import VideoTowerConfig
from echoclip.models.videomae import VideoMAETower
from echoclip.pretrain.mae import (
    MaskedVideoModel,
    MaskedVideoObjective,
    patch_targets,
    patchify,
    unpatchify,
)
from echoclip.pretrain.objectives import PretrainConfig

from .clips import BeatingClips

TOWER = VideoTowerConfig(
    kind="videomae", image_size=32, num_frames=8, patch_size=8, tubelet_size=2, width=32, layers=2, heads=2
)


def _setup(**options):
    torch.manual_seed(0)
    tower = VideoMAETower(TOWER, 16)
    options = {"invariance_weight": 0.0, **options}
    config = PretrainConfig(decoder_width=32, decoder_layers=1, decoder_heads=2, **options)
    model = MaskedVideoModel(tower, config)
    return tower, model, MaskedVideoObjective(config, model, seed=0)


def test_patchify_round_trip_layout_and_targets():
    x = torch.randn(2, 3, 8, 32, 32)
    patches = patchify(x, 8, 2)
    assert patches.shape == (2, 4 * 4 * 4, 3, 2 * 8 * 8)
    assert torch.equal(unpatchify(patches, tuple(x.shape), 8, 2), x)
    # token 1 is the second patch of the first row in the first tubelet (time-major order)
    assert torch.equal(patches[0, 1], x[0, :, 0:2, 0:8, 8:16].reshape(3, -1))
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, 5:20] = True
    targets = patch_targets(patches, mask)
    assert targets.shape == (2, 15, 128 * 3)
    per_channel = targets.view(2, 15, 128, 3)  # decoder layout: pixels, then channels
    assert torch.allclose(per_channel.mean(dim=2), torch.zeros(1), atol=1e-5)
    raw = patch_targets(patches, mask, norm_pix=False).view(2, 15, 128, 3)
    assert torch.equal(raw[0, 0, :, 1], patches[0, 5, 1])


def test_encoder_is_the_towers_and_sees_only_visible_tokens():
    tower, model, objective = _setup(mask="tube", ratio=0.75, periodic_weight=0.0)
    assert model.tower.model is tower.model
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for p in tower.model.parameters())
    seen = []
    hook = tower.model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    batch = objective.collate([BeatingClips(2, frames=8)[i] for i in range(2)], epoch=0)
    out = model(batch["video"], batch["mask"])
    hook.remove()
    assert seen == [torch.Size([2, 16, 32])]  # 64 tokens, 75 % hidden
    assert out["pred"].shape == (2, 48, 2 * 8 * 8 * 3)
    # embedding only the visible patches gives the tower's own tokens
    tokens = model.encode_visible(patchify(batch["video"], 8, 2), batch["mask"])
    assert torch.allclose(tokens, tower.forward_features(batch["video"], batch["mask"]), atol=1e-5)


def test_loss_is_videomae_pretraining_loss():
    """Same encoder, decoder and mask: the loss equals transformers' VideoMAEForPreTraining loss."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    tower, model, objective = _setup(periodic_weight=0.0)
    hf_config = VideoMAEConfig(
        **{
            **tower.model.config.to_dict(),
            "norm_pix_loss": True,
            "decoder_hidden_size": 32,
            "decoder_num_hidden_layers": 1,
            "decoder_num_attention_heads": 2,
            "decoder_intermediate_size": 128,
        }
    )
    reference = VideoMAEForPreTraining(hf_config)
    reference.videomae = tower.model
    reference.encoder_to_decoder = model.encoder_to_decoder
    reference.mask_token = model.mask_token
    reference.decoder = model.decoder
    batch = objective.collate([BeatingClips(3, frames=8)[i] for i in range(3)], epoch=0)
    ours, figures = objective.compute(model, batch)
    theirs = reference(pixel_values=batch["video"].transpose(1, 2), bool_masked_pos=batch["mask"]).loss
    assert torch.allclose(ours, theirs, rtol=2e-3), (float(ours), float(theirs))


def test_reconstruction_loss_falls():
    _, model, objective = _setup(periodic_weight=0.1, norm_pix_loss=False)
    data = BeatingClips(4, frames=8)
    batch = objective.collate([data[i] for i in range(4)], epoch=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss, figures = objective.compute(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else figures["recon"]
    assert figures["recon"] < 0.5 * first
    assert "periodic" in figures  # 4 time steps are too few for positives and negatives


def test_two_masked_views_with_the_invariance_term(tmp_path):
    _, model, objective = _setup(invariance_weight=1.0, periodic_weight=0.1)
    data = BeatingClips(4, frames=8)
    batch = objective.collate([data[i] for i in range(4)], epoch=0)
    assert batch["video"].shape == (4, 2, 3, 8, 32, 32) and batch["mask"].shape == (4, 2, 64)
    assert not torch.equal(batch["mask"][:, 0], batch["mask"][:, 1])  # each view its own mask
    assert not torch.equal(batch["video"][:, 0], batch["video"][:, 1])
    loss, figures = objective.compute(model, batch)
    loss.backward()
    assert {"recon", "periodic", "invariance"} <= set(figures)
    assert model.clip_head[0].weight.grad.abs().sum() > 0
    objective.write_image(model, batch, tmp_path / "views.png")  # shows the first view


def test_masks_are_the_same_for_the_same_sample_and_epoch():
    _, _, objective = _setup()
    data = BeatingClips(4, frames=8)
    a = objective.collate([data[i] for i in range(4)], epoch=3)["mask"]
    b = objective.collate([data[i] for i in (2, 3)], epoch=3)["mask"]
    c = objective.collate([data[i] for i in range(4)], epoch=4)["mask"]
    assert torch.equal(a[2:], b) and not torch.equal(a, c)


def test_reconstruction_image(tmp_path):
    _, model, objective = _setup()
    batch = objective.collate([BeatingClips(1, frames=8)[0]], epoch=0)
    path = objective.write_image(model, batch, tmp_path / "recon.png")
    image = Image.open(path)
    assert image.size == (8 * 32, 3 * 32)  # one column per frame (up to 8), three rows
    rows = objective.reconstruction(model, batch)
    hidden = batch["mask"][0].view(4, 4, 4)[0]  # the same spatial mask in every tubelet
    r, c = map(int, hidden.nonzero()[0])
    assert (rows["masked"][0, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] == 0).all()
    visible = (~hidden).nonzero()[0]
    r, c = map(int, visible)
    patch = (slice(r * 8, r * 8 + 8), slice(c * 8, c * 8 + 8))
    assert (rows["reconstructed"][0][patch] == rows["original"][0][patch]).all()
