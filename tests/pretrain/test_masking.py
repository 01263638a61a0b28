"""Token masks: exact ratios, shared spatial masks, seeded draws, bad options."""

from __future__ import annotations

import pytest
import torch

from echoclip.errors import ConfigError
from echoclip.pretrain.masking import make_mask, make_masks, token_grid

GRIDS = [(8, 7, 7), (4, 4, 4), (1, 14, 14), (16, 3, 5)]


@pytest.mark.parametrize("kind", ["random", "tube", "consistent"])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9, 0.95])
def test_ratio_is_exact_within_one_token(kind, grid, ratio):
    g = torch.Generator().manual_seed(1)
    t, h, w = grid
    for _ in range(5):
        mask = make_mask(kind, grid, ratio, g)
        assert mask.dtype == torch.bool and mask.shape == (t * h * w,)
        if kind == "random":
            assert abs(int(mask.sum()) - ratio * t * h * w) <= 1
        else:  # exact per time step, so exact overall within one token per step
            per_step = mask.view(t, h * w).sum(dim=1)
            assert torch.all((per_step - ratio * h * w).abs() <= 1)
        assert 0 < int(mask.sum()) < mask.numel()


@pytest.mark.parametrize("kind", ["tube", "consistent"])
def test_shared_masks_are_identical_across_time(kind):
    g = torch.Generator().manual_seed(2)
    mask = make_mask(kind, (8, 7, 7), 0.9, g).view(8, 7, 7)
    assert all(torch.equal(mask[i], mask[0]) for i in range(8))


def test_tube_mask_repeats_over_the_tubelets_of_a_videomae_grid():
    grid = token_grid(num_frames=16, image_size=112, patch_size=16, tubelet_size=2)
    assert grid == (8, 7, 7)
    masks = make_masks("tube", grid, 0.9, batch=4, generator=torch.Generator().manual_seed(0))
    tubelets = masks.view(4, 8, 49)
    assert torch.equal(tubelets, tubelets[:, :1].expand(-1, 8, -1))
    assert not torch.equal(tubelets[0, 0], tubelets[1, 0])  # each clip draws its own


def test_random_masks_differ_across_time():
    mask = make_mask("random", (8, 7, 7), 0.9, torch.Generator().manual_seed(0)).view(8, 49)
    assert not all(torch.equal(mask[i], mask[0]) for i in range(8))


def test_same_seed_same_mask():
    a = make_mask("tube", (8, 7, 7), 0.75, torch.Generator().manual_seed(5))
    b = make_mask("tube", (8, 7, 7), 0.75, torch.Generator().manual_seed(5))
    c = make_mask("tube", (8, 7, 7), 0.75, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kind,ratio", [("tube", 0.0), ("tube", 1.0), ("random", -0.1), ("blocks", 0.9)])
def test_bad_options_are_errors(kind, ratio):
    with pytest.raises(ConfigError):
        make_mask(kind, (8, 7, 7), ratio)
