"""Which tokens of a clip masked video modelling hides.

A mask is a ``bool`` vector over the tokens of one clip, ``True`` where the token is
hidden, in the order of a VideoMAE encoder's tokens: time-major over the grid
``(t, h, w)`` of tubelets (``t = num_frames / tubelet_size``, ``h = w = image_size /
patch_size``). Only visible tokens go through the encoder, so every clip of a batch
must hide the same number of tokens: the counts here are exact, not Bernoulli draws.

Kinds:

- ``random``: ``round(ratio * t*h*w)`` tokens chosen uniformly over space and time.
  Easy to solve by copying a neighbouring frame, since echo moves slowly.
- ``tube`` (VideoMAE): one spatial mask of ``round(ratio * h*w)`` patches, repeated
  for every tubelet, so a hidden patch is hidden through the whole clip.
- ``consistent`` (EchoFM's spatio-temporally consistent mask): one spatial mask shared
  by every time step of the clip. On a tubelet grid this is the same family as
  ``tube``; both names are accepted so recipes from either paper read as written.

Masks come from a ``torch.Generator`` the caller seeds per sample, so a run draws the
same masks after a resume and with any number of data workers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from echoclip.errors import ConfigError
from echoclip.registry import Registry

Grid = tuple[int, int, int]


def num_masked(n: int, ratio: float) -> int:
    """Tokens to hide out of ``n``: ``ratio * n`` rounded, keeping at least one hidden and one visible."""
    return min(n - 1, max(1, round(ratio * n)))


def _choose(n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """A bool vector of length ``n`` with exactly ``k`` True entries at random places."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask


def random_mask(grid: Grid, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    t, h, w = grid
    n = t * h * w
    return _choose(n, num_masked(n, ratio), generator)


def shared_spatial_mask(grid: Grid, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One spatial mask repeated at every time index (``tube`` and ``consistent``)."""
    t, h, w = grid
    spatial = _choose(h * w, num_masked(h * w, ratio), generator)
    return spatial.repeat(t)


MASKS: Registry[Callable[[Grid, float, torch.Generator | None], torch.Tensor]] = Registry("mask")
MASKS["random"] = random_mask
MASKS["tube"] = shared_spatial_mask
MASKS["consistent"] = shared_spatial_mask


def check_mask_options(kind: str, ratio: float) -> None:
    MASKS.get(kind)
    if not (isinstance(ratio, int | float) and 0.0 < ratio < 1.0):
        raise ConfigError(f"mask ratio must be between 0 and 1 (exclusive), got {ratio!r}")


def make_mask(kind: str, grid: Grid, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The mask of one clip: ``bool [t*h*w]``, ``True`` = hidden.

    Example::

        g = torch.Generator().manual_seed(0)
        mask = make_mask("tube", (8, 7, 7), 0.9, g)   # 44 of 49 patches hidden in each of 8 tubelets
    """
    check_mask_options(kind, ratio)
    if min(grid) < 1:
        raise ConfigError(f"a token grid needs positive sizes, got {grid}")
    return MASKS[kind](grid, ratio, generator)


def make_masks(
    kind: str, grid: Grid, ratio: float, batch: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Masks of ``batch`` clips, ``bool [batch, t*h*w]``, each drawn independently."""
    return torch.stack([make_mask(kind, grid, ratio, generator) for _ in range(batch)])


def token_grid(num_frames: int, image_size: int, patch_size: int, tubelet_size: int) -> Grid:
    """The ``(t, h, w)`` token grid of a VideoMAE encoder."""
    return (num_frames // tubelet_size, image_size // patch_size, image_size // patch_size)
