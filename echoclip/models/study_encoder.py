"""One embedding per study from the embeddings of its videos.

A report describes a whole study, seen through many videos of several views; no single
video shows everything it says. A study pooling turns a study's video embeddings
(``[B, N, D]``, a mask ``[B, N]`` of the real videos, and view ids ``[B, N]``) into one
``[B, D]`` embedding. Poolings are registered by name in :data:`STUDY_POOLINGS`:

- ``mean``: the mean of the unit video embeddings; it ignores views. The baseline, and
  what :meth:`EchoCLIP.encode_study` uses when the model has no pooling configured.
- ``echoprime``: EchoPrime's fixed weight of each view for each report section
  (``configs/views/echoprime.json``). Per section, the sum of the video embeddings weighted
  by that section's entry for each video's view, scaled to unit length; the study embedding
  is the mean of those section embeddings (or one named ``section``).
- ``attention``: learned. Each video's key is its content plus a learned embedding of its
  view; a learned query per head weights the videos (softmax over the real ones), and the
  output is the weighted sum of the videos' embeddings: a learned, content- and
  view-aware weighting, as EchoPrime's table is a fixed one. The query starts at zero, so
  an untrained attention pooling is ``mean`` exactly, and study-level training starts
  from the baseline.

Views are ids into a vocabulary of view names (:data:`STUDY_VIEWS` by default: the 11
views of EchoPrime's view classifier, in its output order, named as elsewhere in echoclip:
``PLAX`` for ``Parasternal_Long`` and so on). ``-1`` is an unknown view: a view that is
``None``, not given, or not in the vocabulary. :func:`view_ids` turns names into ids.

:class:`StudyEncoder` adds what training needs to any pooling: video dropout (each video
dropped at a rate, never all of a study's) and view dropout (a view replaced by unknown at
a rate), so the pooling learns to do without any one video and without views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.config import STUDY_VIEWS
from echoclip.registry import Registry

UNKNOWN_VIEW = -1

# other spellings of a view (lower case) -> its name in STUDY_VIEWS
VIEW_ALIASES: dict[str, str] = {
    "parasternal_long": "PLAX",
    "parasternal_short": "PSAX",
    "doppler_parasternal_long": "Doppler_PLAX",
    "doppler_parasternal_short": "Doppler_PSAX",
    "sc": "Subcostal",
    "suprasternal": "SSN",
}

# echoclip's view name -> the column of EchoPrime's section x view table
ECHOPRIME_COLUMNS: dict[str, str] = {
    "A2C": "A2C",
    "A3C": "A3C",
    "A4C": "A4C",
    "A5C": "A5C",
    "Apical_Doppler": "Apical_Doppler",
    "Doppler_PLAX": "Doppler_Parasternal_Long",
    "Doppler_PSAX": "Doppler_Parasternal_Short",
    "PLAX": "Parasternal_Long",
    "PSAX": "Parasternal_Short",
    "SSN": "SSN",
    "Subcostal": "Subcostal",
}


def canonical_view(name: str | None) -> str | None:
    """A view name as :data:`STUDY_VIEWS` spells it (``"parasternal_long"`` -> ``"PLAX"``);
    names it does not know pass unchanged, ``None`` stays ``None``."""
    if name is None:
        return None
    key = str(name).strip()
    by_lower = {v.lower(): v for v in STUDY_VIEWS}
    return by_lower.get(key.lower()) or VIEW_ALIASES.get(key.lower()) or key


def view_ids(names: Sequence[Any], vocabulary: Sequence[str] = STUDY_VIEWS) -> torch.Tensor:
    """View names -> ``Long`` ids into ``vocabulary``; ``None`` and unknown names give ``-1``.

    ``names`` is one study's list (-> ``[N]``) or a list of studies' lists, which may differ
    in length (-> ``[B, N_max]``, padded with ``-1``).

    Example::

        view_ids(["A4C", "Parasternal_Long", None])     # tensor([2, 7, -1])
    """
    index = {canonical_view(v): i for i, v in enumerate(vocabulary)}

    def one(study: Sequence[Any]) -> list[int]:
        return [index.get(canonical_view(v), UNKNOWN_VIEW) for v in study]

    if all(v is None or isinstance(v, str) for v in names):
        return torch.tensor(one(names), dtype=torch.long)
    rows = [one(study) for study in names]
    out = torch.full((len(rows), max((len(r) for r in rows), default=0)), UNKNOWN_VIEW, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class StudyPooling(nn.Module):
    """``forward(x [B, N, D] unit embeddings, mask [B, N] bool, views [B, N] long) -> [B, D]``.

    Every row of ``mask`` holds at least one real video and padded entries of ``x`` are
    zero (:class:`StudyEncoder` sees to both); padding must not change the output.
    """

    def __init__(self, dim: int, views: Sequence[str] = STUDY_VIEWS) -> None:
        super().__init__()
        self.dim = int(dim)
        self.views = tuple(views)


STUDY_POOLINGS: Registry[type[StudyPooling]] = Registry("study pooling", ModelError)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1)


@STUDY_POOLINGS.register("mean")
class MeanPooling(StudyPooling):
    """The mean of the real videos' unit embeddings (views are ignored)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return _masked_mean(x, mask)


@STUDY_POOLINGS.register("echoprime")
class EchoPrimePooling(StudyPooling):
    """EchoPrime's fixed section x view weights (no parameters to learn).

    Args:
        section: one of the table's 15 report sections, whose embedding is the study's;
            ``None`` (default): the mean of the unit section embeddings.

    A view with no column in the table (an unknown view, or a vocabulary name not in
    :data:`ECHOPRIME_COLUMNS`) weighs the mean of the section's row: what a video of a
    view drawn at random would weigh. A section whose weights are all zero for a study
    (only views the section ignores) has no embedding and is left out of the mean; a
    study with no section left gets the mean of its videos.
    """

    def __init__(self, dim: int, views: Sequence[str] = STUDY_VIEWS, section: str | None = None) -> None:
        super().__init__(dim, views)
        # echoprime_compat imports the model, which imports this module: read the table lazily
        from echoclip.models.echoprime_compat import section_view_weights

        table = section_view_weights()
        weights = table.weights if section is None else table.row(section)[None]
        self.section = section
        self.sections = table.sections if section is None else (section,)
        fallback = weights.mean(dim=1)
        columns = [ECHOPRIME_COLUMNS.get(canonical_view(v) or "") for v in self.views]
        rows = [weights[:, table.views.index(c)] if c in table.views else fallback for c in columns]
        # [V + 1, S]: the weight of each view (the last row: unknown) for each section
        self.register_buffer("view_weights", torch.stack([*rows, fallback]), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        unknown = self.view_weights.shape[0] - 1
        ids = torch.where(views < 0, unknown, views)
        w = self.view_weights[ids] * mask.unsqueeze(-1)  # [B, N, S]
        sections = F.normalize(torch.einsum("bns,bnd->bsd", w.to(x.dtype), x), dim=-1)
        present = (w.sum(1) > 0).to(x.dtype).unsqueeze(-1)  # [B, S, 1]
        pooled = (sections * present).sum(1) / present.sum(1).clamp_min(1)
        return torch.where(present.sum(1) > 0, pooled, _masked_mean(x, mask))


@STUDY_POOLINGS.register("attention")
class AttentionPooling(StudyPooling):
    """Learned, view-aware attention over a study's videos (one query per head).

    ``key = W_k(LayerNorm(x) + view_embedding)``; head ``h`` weights the videos by
    ``softmax(q_h . key_h / sqrt(d_h))`` over the real ones and pools its ``D / heads``
    channels of ``x``: multi-head attention whose values are the video embeddings
    themselves, so that the study embedding stays a weighted mean of its videos' and
    only the weighting is learned. ``q`` starts at zero, so an untrained pooling is the
    mean.

    Args:
        heads: the number of queries; ``dim`` must be a multiple of it.
    """

    def __init__(self, dim: int, views: Sequence[str] = STUDY_VIEWS, heads: int = 1) -> None:
        super().__init__(dim, views)
        if not (isinstance(heads, int) and heads > 0 and dim % heads == 0):
            raise ModelError(
                f"attention study pooling: heads must divide the embedding size {dim}, got {heads!r}"
            )
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        # the last row is the unknown view
        self.view_embedding = nn.Embedding(len(self.views) + 1, dim)
        nn.init.normal_(self.view_embedding.weight, std=0.02)
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))

    def weights(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """``[B, heads, N]``: how much each video counts in each head (zero for padding)."""
        h = self._inputs(x, views)
        b, n, _ = x.shape
        keys = self.key(h).view(b, n, self.heads, -1)
        scores = torch.einsum("bnhk,hk->bhn", keys, self.query.to(keys.dtype)) / keys.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return scores.float().softmax(dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        values = x.view(b, n, self.heads, d // self.heads)
        return torch.einsum("bhn,bnhc->bhc", self.weights(x, mask, views), values).reshape(b, d)

    def _inputs(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        unknown = self.view_embedding.num_embeddings - 1
        ids = torch.where(views < 0, unknown, views)
        return self.norm(x) + self.view_embedding(ids).to(x.dtype)


class StudyEncoder(nn.Module):
    """A study pooling by name, with the input checks and the training-time dropouts.

    ``forward(embeddings [B, N, D], mask [B, N] = all real, views [B, N] = all unknown) -> [B, D]``
    (not normalised). Video embeddings are scaled to unit length first, so each video's
    weight is the pooling's and not its embedding's norm.

    Args:
        dim: the embedding size.
        pooling: a name in :data:`STUDY_POOLINGS`.
        views: the view vocabulary that view ids index.
        video_dropout: in training, each real video is dropped at this rate; a study keeps
            at least one.
        view_dropout: in training, each view is replaced by unknown at this rate.
        options: keyword arguments of the pooling (``heads`` of ``attention``, ``section``
            of ``echoprime``).
    """

    def __init__(
        self,
        dim: int,
        pooling: str = "mean",
        views: Sequence[str] = STUDY_VIEWS,
        video_dropout: float = 0.0,
        view_dropout: float = 0.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for what, rate in (("video_dropout", video_dropout), ("view_dropout", view_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ModelError(f"study {what} must be in [0, 1), got {rate!r}")
        self.video_dropout = float(video_dropout)
        self.view_dropout = float(view_dropout)
        self.name = pooling
        self.views = tuple(views)
        try:
            self.pooling = STUDY_POOLINGS.get(pooling)(dim, self.views, **(options or {}))
        except TypeError as e:
            raise ModelError(f"study pooling {pooling!r}: bad options {options!r} ({e})") from None

    @property
    def dim(self) -> int:
        return self.pooling.dim

    def view_ids(self, names: Sequence[Any]) -> torch.Tensor:
        """View names -> ids into this encoder's vocabulary (:func:`view_ids`)."""
        return view_ids(names, self.views)

    def forward(
        self,
        embeddings: torch.Tensor,
        mask: torch.Tensor | None = None,
        views: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x, mask, views = self._checked(embeddings, mask, views)
        if self.training:
            mask = self._drop_videos(mask)
            if self.view_dropout > 0:
                hide = torch.rand(views.shape, device=views.device) < self.view_dropout
                views = views.masked_fill(hide, UNKNOWN_VIEW)
        # zeros, not whatever the padding held (a NaN times a zero weight is still NaN)
        x = F.normalize(x, dim=-1).masked_fill(~mask.unsqueeze(-1), 0)
        return self.pooling(x, mask, views)

    def _drop_videos(self, mask: torch.Tensor) -> torch.Tensor:
        if self.video_dropout <= 0:
            return mask
        r = torch.rand(mask.shape, device=mask.device)
        keep = mask & (r >= self.video_dropout)
        # a study that lost every video keeps one of them, drawn at random
        lone = F.one_hot(r.masked_fill(~mask, -1).argmax(dim=1), mask.shape[1]).bool()
        return torch.where(keep.any(dim=1, keepdim=True), keep, lone & mask)

    def _checked(
        self, x: torch.Tensor, mask: torch.Tensor | None, views: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ModelError(
                f"a study encoder takes video embeddings [B, N, {self.dim}], got {list(x.shape)}"
            )
        b, n = x.shape[:2]
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
        if views is None:
            views = torch.full((b, n), UNKNOWN_VIEW, dtype=torch.long, device=x.device)
        for what, t in (("mask", mask), ("views", views)):
            if tuple(t.shape) != (b, n):
                raise ModelError(f"study {what} must be [B, N] = [{b}, {n}], got {list(t.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        views = views.to(device=x.device, dtype=torch.long)
        if not mask.any(dim=1).all():
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise ModelError(f"studies {empty} of the batch have no videos (mask all False)")
        if ((views < UNKNOWN_VIEW) | (views >= len(self.views))).any():
            raise ModelError(
                f"view ids must be -1 (unknown) or in [0, {len(self.views)}) (the views {list(self.views)})"
            )
        return x, mask, views
