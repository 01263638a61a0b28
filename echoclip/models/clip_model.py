"""``EchoCLIP``: a video tower and a report tower in one embedding space, as open_clip's ``CLIP``.

``encode_video`` / ``encode_text`` mirror open_clip's ``encode_image`` / ``encode_text``
(``normalize=True`` for unit vectors); ``forward`` returns what ``open_clip.loss.ClipLoss``
and ``SigLipLoss`` take, with ``logit_scale`` already exponentiated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoclip.data.transforms import PreprocessConfig
from echoclip.errors import ModelError
from echoclip.models.config import ModelConfig
from echoclip.models.scale_embedding import ScaleEmbedding
from echoclip.models.study_encoder import StudyEncoder
from echoclip.models.text_towers import build_text_tower
from echoclip.models.video_towers import build_video_tower


def default_preprocess(config: ModelConfig) -> PreprocessConfig:
    """The inference transform a config implies: the tower's clip shape plus its ``preprocess`` fields."""
    return PreprocessConfig.from_dict(
        {"image_size": config.video.image_size, "num_frames": config.video.num_frames, **config.preprocess}
    )


class EchoCLIP(nn.Module):
    """Video-report CLIP model built from a :class:`ModelConfig`.

    Attributes:
        config: the :class:`ModelConfig` (saved as ``config.json``).
        preprocess_config: the :class:`PreprocessConfig` of its inputs (``preprocess.json``).
        video_tower, text_tower: the towers; each has ``forward_features``.
        logit_scale: log of the logit scale (a parameter; frozen when the config fixes it).
        logit_bias: the SigLIP bias, or ``None``.
        scale_embedding: the clip's cm per pixel as an input (:class:`ScaleEmbedding`), or ``None``.
        study_encoder: the pooling of a study's videos (:class:`StudyEncoder`), or ``None``
            (``encode_study`` then takes the mean).
    """

    def __init__(self, config: ModelConfig, preprocess_config: PreprocessConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.preprocess_config = preprocess_config or default_preprocess(config)
        # the tokenizer the text tower reads (set by create_model and load_model);
        # save_pretrained writes it as tokenizer.json
        self.tokenizer: Any = None
        # what the model was trained on, to tell unlike inputs (models.ood; load_model
        # reads it, save_pretrained writes it); None: the model cannot say
        self.ood_reference: Any = None
        self.video_tower = build_video_tower(config.video, config.embed_dim)
        self.text_tower = build_text_tower(config.text, config.embed_dim)
        self.scale_embedding = (
            ScaleEmbedding(config.embed_dim, dropout=config.scale_dropout) if config.scale_embedding else None
        )
        self.study_encoder = (
            StudyEncoder(
                config.embed_dim,
                config.study_pooling,
                views=config.study_views,
                video_dropout=config.study_video_dropout,
                view_dropout=config.study_view_dropout,
                options=config.study_options,
            )
            if config.study_pooling is not None
            else None
        )
        self.logit_scale = nn.Parameter(
            torch.tensor(float(config.logit_scale_init)), requires_grad=config.learn_logit_scale
        )
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(config.logit_bias_init)))
            if config.logit_bias_init is not None
            else None
        )

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """The shape of one input clip, ``(3, T, H, W)``."""
        v = self.config.video
        return (3, v.num_frames, v.image_size, v.image_size)

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def uses_scale(self) -> bool:
        """Whether the video embedding takes the clips' cm per pixel (``encode_video(cm_per_px=)``)."""
        return self.scale_embedding is not None

    def encode_video(
        self, video: torch.Tensor, normalize: bool = False, cm_per_px: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``float [B, 3, T, H, W] -> [B, D]`` (unit norm with ``normalize=True``).

        ``cm_per_px`` (``[B, 2]``, x and y per clip, NaN where unknown; the transform's
        ``scaled`` gives it) is read by a model with a scale embedding: without it, every
        clip's scale is unknown. Models without one ignore it.
        """
        self._check_video(video)
        x = self.video_tower(video)
        if self.scale_embedding is not None:
            if cm_per_px is None:
                cm_per_px = torch.full((video.shape[0], 2), float("nan"), device=video.device)
            elif tuple(cm_per_px.shape) != (video.shape[0], 2):
                raise ModelError(
                    f"cm_per_px must be [{video.shape[0]}, 2] (x, y per clip), got {list(cm_per_px.shape)}"
                )
            x = x + self.scale_embedding(cm_per_px.to(x.device)).to(x.dtype)
        return F.normalize(x, dim=-1) if normalize else x

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or tuple(video.shape[1:]) != self.video_shape:
            expected = ", ".join(str(n) for n in self.video_shape)
            raise ModelError(
                f"{self.config.name}: expected a video tensor of shape [B, {expected}] "
                f"(batch, channels, frames, height, width), got {list(video.shape)}; "
                "preprocess videos with the transform of create_model_and_transforms"
            )

    @property
    def embeds_frames(self) -> bool:
        """Whether the video tower embeds each frame (a ``frames`` tower with ``mean``
        aggregation, as the published EchoCLIP): zero-shot then ranks prompts per frame."""
        return bool(getattr(self.video_tower, "embeds_frames", False))

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """``float [B, 3, T, H, W] -> [B, T, D]``: every frame's unit-length embedding.

        Only for towers that :attr:`embeds_frames`; ``encode_video`` is their mean.
        """
        self._check_video(video)
        if not self.embeds_frames:
            raise ModelError(f"{self.config.name}: its video tower does not embed single frames")
        return self.video_tower.frame_embeddings(video)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``Long [B, L] -> [B, D]``, ``L <= context_length`` (unit norm with ``normalize=True``)."""
        cfg = self.config.text
        if text.ndim != 2 or text.dtype not in (torch.int64, torch.int32):
            raise ModelError(
                f"expected token ids of shape [B, L] (integers), got {text.dtype} {list(text.shape)}"
            )
        if text.shape[1] > cfg.context_length:
            raise ModelError(
                f"{text.shape[1]} tokens per text exceed the context length {cfg.context_length}"
            )
        if text.numel() and not text.is_meta and (int(text.max()) >= cfg.vocab_size or int(text.min()) < 0):
            raise ModelError(
                f"token id {int(text.max())} is outside the text vocabulary of size {cfg.vocab_size}; "
                "use the model's tokenizer (get_tokenizer) or create the model with tokenizer="
            )
        x = self.text_tower(text)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_study(
        self,
        videos: torch.Tensor,
        views: torch.Tensor | Sequence[Any] | None = None,
        mask: torch.Tensor | None = None,
        normalize: bool = True,
        cm_per_px: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One embedding per study: ``[D]`` for one study, ``[B, D]`` for a batch of them.

        Args:
            videos: one study's clips ``[N, 3, T, H, W]`` or a batch's ``[B, N, 3, T, H, W]``
                (encoded with :meth:`encode_video`; only the real ones), or video
                embeddings ``[N, D]`` / ``[B, N, D]``.
            views: each video's view, known or predicted (``ViewClassifier.predict_views``):
                names (a list, or a list per study), or ids ``[N]`` / ``[B, N]`` into
                ``config.study_views`` with ``-1`` for unknown. ``None``: all unknown.
            mask: ``[N]`` / ``[B, N]``, True for real videos, False for padding (default: all real).
            cm_per_px: the clips' scales ``[N, 2]`` / ``[B, N, 2]``, for a model with a scale embedding.

        The pooling is the config's ``study_pooling``; a model without one takes the mean of
        the unit video embeddings. Training mode applies the study dropouts.

        Example::

            study = model.encode_study(clips, views=["A4C", "PLAX", None])   # [D]
        """
        one = videos.ndim in (2, 5)
        if videos.ndim not in (2, 3, 5, 6):
            raise ModelError(
                "encode_study takes clips [N, 3, T, H, W] or [B, N, 3, T, H, W], or video embeddings "
                f"[N, D] or [B, N, D], got {list(videos.shape)}"
            )
        if one:
            videos = videos.unsqueeze(0)
            mask = None if mask is None else mask.unsqueeze(0)
            cm_per_px = None if cm_per_px is None else cm_per_px.unsqueeze(0)
            if views is not None:
                views = views.unsqueeze(0) if isinstance(views, torch.Tensor) else [list(views)]
        encoder = self.study_encoder
        if encoder is None:  # no parameters: nothing to keep or save
            encoder = StudyEncoder(self.config.embed_dim, "mean", views=self.config.study_views)
        b, n = videos.shape[:2]
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=videos.device)
        if videos.ndim == 6:
            videos = self._encode_study_videos(videos, mask.to(videos.device).bool(), cm_per_px)
        if views is not None and not isinstance(views, torch.Tensor):
            views = encoder.view_ids(views).to(videos.device)
            if views.ndim == 2 and views.shape[1] < n:  # shorter lists: the rest are unknown (or padding)
                views = F.pad(views, (0, n - views.shape[1]), value=-1)
        out = encoder(videos, mask, views)
        out = F.normalize(out, dim=-1) if normalize else out
        return out[0] if one else out

    def _encode_study_videos(
        self, clips: torch.Tensor, mask: torch.Tensor, cm_per_px: torch.Tensor | None
    ) -> torch.Tensor:
        """``[B, N, 3, T, H, W] -> [B, N, D]``, encoding only the real clips (zeros for padding)."""
        if tuple(mask.shape) != tuple(clips.shape[:2]):
            raise ModelError(f"study mask must be [B, N] = {list(clips.shape[:2])}, got {list(mask.shape)}")
        scales = None if cm_per_px is None else cm_per_px.to(clips.device)[mask]
        x = self.encode_video(clips[mask], normalize=True, cm_per_px=scales)
        out = x.new_zeros(*clips.shape[:2], x.shape[-1])
        out[mask] = x
        return out

    def forward(
        self,
        video: torch.Tensor,
        text: torch.Tensor,
        cm_per_px: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        views: torch.Tensor | Sequence[Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Normalised features and the (exponentiated) logit scale, as open_clip's ``CLIP.forward``.

        A batch of studies (``video`` ``[B, N, 3, T, H, W]``, with ``mask`` and ``views`` as
        :meth:`encode_study` takes them) gives study embeddings as ``video_features``: one
        forward pass, so that study-level training runs under DDP as clip level does.
        """
        if video.ndim == 6:
            features = self.encode_study(video, views=views, mask=mask, cm_per_px=cm_per_px)
        else:
            features = self.encode_video(video, normalize=True, cm_per_px=cm_per_px)
        out = {
            "video_features": features,
            "text_features": self.encode_text(text, normalize=True),
            "logit_scale": self.logit_scale.exp(),
        }
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out

    def set_study_pooling(self, pooling: str) -> None:
        """Pool studies by ``pooling`` (a name in ``STUDY_POOLINGS``) from now on, and say so in
        the config, so that ``save_pretrained`` and ``load_model`` keep it.

        A model that pools by that name already keeps its pooling and weights; otherwise the
        pooling is new (an ``attention`` pooling starts as the mean).
        """
        if self.config.study_pooling == pooling and self.study_encoder is not None:
            return
        config = self.config.replace(study_pooling=pooling)
        encoder = StudyEncoder(
            config.embed_dim,
            pooling,
            views=config.study_views,
            video_dropout=config.study_video_dropout,
            view_dropout=config.study_view_dropout,
            options=config.study_options,
        )
        reference = next(self.parameters(), None)
        if reference is not None:
            encoder = encoder.to(reference.device)
        encoder.train(self.training)
        self.config, self.study_encoder = config, encoder

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass of both towers (less memory, more compute)."""
        for tower in (self.video_tower, self.text_tower):
            setter: Any = getattr(tower, "set_grad_checkpointing", None)
            if setter is not None:
                setter(enable)

    def set_token_values(self, values: Mapping[int, float]) -> None:
        """Give the value-aware embeddings the tokenizer's number tokens (``value_token_values()``)."""
        embedding = getattr(self.text_tower, "values", None)
        if embedding is None:
            raise ModelError(f"{self.config.name}: the text tower has no value-aware embeddings")
        embedding.set_values(values)

    def save_pretrained(self, path: str | os.PathLike[str], tokenizer: Any = None) -> Path:
        """Write a model directory (config, weights, preprocess, tokenizer) atomically; returns its path."""
        from echoclip.models.model_dir import save_model_dir

        return save_model_dir(self, path, tokenizer=tokenizer)
