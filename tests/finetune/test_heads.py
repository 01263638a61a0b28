"""Heads learn from tokens on every grid; token grids of the towers; layer-wise learning rates."""

from __future__ import annotations

import pytest
import torch

from echoclip.errors import ConfigError
from echoclip.finetune.heads import HEADS, create_head, time_pooled, token_grid
from echoclip.finetune.model import FineTuneModel, layer_depths
from echoclip.loop.optim import build_optimizer
from echoclip.models.factory import create_model

from .conftest import TINY


def _batch(grid, width=16, n=16, seed=0):
    """Tokens whose target is how much one feature moves over time (as EF moves the ventricle)."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    x = torch.randn(n, t, h * w, width, generator=g)
    amplitude = torch.rand(n, generator=g) * 2
    wave = torch.sin(torch.linspace(0, 6.28, t))
    x[..., 0] += amplitude[:, None, None] * wave[None, :, None]
    y = (amplitude - amplitude.mean()) / amplitude.std()  # standardised, as the objective scales targets
    return x.reshape(n, t * h * w, width), y[:, None]


@pytest.mark.parametrize("grid", [(8, 1, 1), (4, 2, 2)])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_each_head_loss_falls_on_a_small_batch(name, grid):
    torch.manual_seed(0)
    x, y = _batch(grid)
    head = create_head(name, width=16, grid=grid, outputs=1)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.l1_loss(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert head(x).shape == (16, 1)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_unknown_head_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown head 'mlp'"):
        create_head("mlp", 16, (8, 1, 1), 1)
    with pytest.raises(ConfigError, match="bad options"):
        create_head("linear", 16, (8, 1, 1), 1, depth=3)


def test_time_pooled_is_mean_and_spread_over_time():
    x = torch.arange(8.0).reshape(1, 4, 2)  # grid (2, 2, 1): two steps of two tokens
    pooled = time_pooled(x, (2, 2, 1))
    steps = torch.tensor([[[1.0, 2.0], [5.0, 6.0]]])
    assert torch.allclose(pooled, torch.cat([steps.mean(1), steps.std(1, unbiased=False)], -1))


def test_token_grids_of_the_towers():
    frames = create_model("echoclip-tiny", **TINY).video_tower
    assert token_grid(frames, 8) == (8, 1, 1)
    vit = create_model(
        "echoclip-vit-tiny",
        video={"image_size": 32, "num_frames": 8, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    ).video_tower
    assert token_grid(vit, 4 * 4 * 4) == (4, 4, 4)
    model = FineTuneModel(vit, "stfnet", ("ef",))
    assert model.grid == (4, 4, 4) and model.width == 32
    assert model(torch.zeros(2, 3, 8, 32, 32)).shape == (2, 1)
    trainable = [n for n, p in vit.named_parameters() if p.requires_grad]
    assert not any(n.startswith(("pool.", "proj.")) for n in trainable)
    depths = layer_depths(vit, trainable)  # patch embedding, then one block per transformer layer
    assert depths["model.embeddings.patch_embeddings.projection.weight"] == 0
    assert depths["model.encoder.layer.1.output.dense.weight"] == 2


def test_layer_decay_scales_deeper_blocks_down():
    torch.manual_seed(0)
    tower = create_model("echoclip-tiny", **TINY).video_tower
    model = FineTuneModel(tower, "linear", ("ef",), layer_decay=0.5)
    trainable = [n for n, p in tower.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("backbone.") for n in trainable)  # pooling/projection unused
    depths = layer_depths(tower, trainable)
    assert sorted(set(depths.values())) == [0, 1, 2, 3]  # four conv blocks, batch norms merged in
    opt = build_optimizer(model, lr=1.0, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    lrs = sorted({g["lr"] for g in opt.param_groups}, reverse=True)
    assert lrs == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert opt.param_groups[0]["lr"] == 1.0  # the head's group first: the logged rate

    frozen = FineTuneModel(create_model("echoclip-tiny", **TINY).video_tower, "linear", ("ef",), freeze=True)
    groups = build_optimizer(frozen, lr=1.0, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6).param_groups
    head_params = {id(p) for p in frozen.head.parameters()}
    assert {id(p) for g in groups for p in g["params"]} == head_params
    frozen.train()
    assert not frozen.encoder.training and frozen.head.training  # batch norm statistics stay put
