"""Which echocardiographic view a clip shows, from its first frame.

:class:`ViewClassifier` is a torchvision image classifier (built with ``weights=None``,
nothing is downloaded) with one output per view name. It reads the clips the video
tower reads (``[B, 3, T, H, W]``, normalised alike) and classifies their first frame,
as EchoPrime's view classifier does; single frames ``[B, 3, H, W]`` work too. Study-level
code weights or groups a study's videos by :meth:`ViewClassifier.classify_views`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from echoclip.errors import ModelError


class ViewClassifier(nn.Module):
    """``frames -> logits [B, len(views)]``: a torchvision image classifier (``self.net``) over named views.

    Args:
        views: the view names, in the order of the classifier's outputs.
        arch: a torchvision image classification model (``convnext_base`` is EchoPrime's).

    Example::

        probs = classifier.classify_views(clips)       # [B, V], rows sum to 1
        names = classifier.predict_views(clips)         # ["A4C", "Parasternal_Long", ...]
    """

    def __init__(self, views: Sequence[str], arch: str = "convnext_base") -> None:
        super().__init__()
        import torchvision

        self.views = tuple(views)
        if len(self.views) < 2 or len(set(self.views)) != len(self.views):
            raise ModelError(f"a view classifier needs two or more distinct view names, got {list(views)}")
        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ModelError(f"unknown torchvision image classifier {arch!r}")
        self.arch = arch
        self.net = torchvision.models.get_model(arch, weights=None, num_classes=len(self.views))

    @staticmethod
    def first_frames(x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` clips -> their first frames ``[B, 3, H, W]``; frames pass unchanged."""
        if x.ndim == 5:
            return x[:, :, 0]
        if x.ndim == 4:
            return x
        raise ModelError(
            f"expected clips [B, 3, T, H, W] or frames [B, 3, H, W], got a tensor of shape {list(x.shape)}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.first_frames(x))

    @torch.no_grad()
    def classify_views(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of each view, ``[B, len(views)]`` (columns in the order of :attr:`views`)."""
        return self(x).float().softmax(dim=-1)

    def predict_views(self, x: torch.Tensor) -> list[str]:
        """The most probable view of each clip, by name."""
        return [self.views[i] for i in self.classify_views(x).argmax(dim=-1).tolist()]
