"""What the pretraining objectives share: their options, per-sample randomness, collation,
held-out loss and saving; and the choice of objective by the kind of video tower.

Objectives follow :class:`echoclip.loop.trainer.Objective`, so pretraining runs in the
same loop as CLIP training (checkpoints, exact resume, metrics, TensorBoard).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echoclip.errors import ConfigError
from echoclip.pretrain.masking import check_mask_options
from echoclip.pretrain.periodic import estimate_periods


@dataclass(frozen=True)
class PretrainConfig:
    """Options of self-supervised pretraining (the training budget is a ``LoopConfig``).

    Attributes:
        mask, ratio: the token mask of masked modelling (``videomae`` towers).
        norm_pix_loss: reconstruct each patch normalised by its own mean and std (VideoMAE's
            default), which stresses edges and texture over overall brightness.
        decoder_width, decoder_layers, decoder_heads: the VideoMAE decoder; it sees every
            token, so it is kept narrow.
        periodic_weight: weight of the periodic contrastive term on frame features.
        invariance_weight: weight of the clip augmentation-invariance term; ``None`` means 1.0 for
            towers without masked modelling and 0 for ``videomae`` (on a ViT pretrained by
            masked modelling it slowed reconstruction and did not help a probe).
        temperature: softmax temperature of both contrastive terms.
        projection_dim: width of the projection heads the contrastive terms read.
        image_every: write a reconstruction PNG every this many steps (0: never).
        val_clips: held-out clips whose loss is reported at each validation.
    """

    mask: str = "tube"
    ratio: float = 0.9
    norm_pix_loss: bool = True
    decoder_width: int = 96
    decoder_layers: int = 2
    decoder_heads: int = 3
    periodic_weight: float = 0.1
    invariance_weight: float | None = None
    temperature: float = 0.1
    projection_dim: int = 128
    image_every: int = 100
    val_clips: int = 32

    def __post_init__(self) -> None:
        check_mask_options(self.mask, self.ratio)
        for name in ("periodic_weight", "invariance_weight"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature!r}")
        if self.decoder_width % self.decoder_heads:
            raise ConfigError(
                f"decoder_width {self.decoder_width} is not divisible by decoder_heads {self.decoder_heads}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_invariance_default(self, weight: float) -> PretrainConfig:
        """This config with ``invariance_weight`` set to ``weight`` if it was left unset."""
        return self if self.invariance_weight is not None else replace(self, invariance_weight=weight)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator for one sample in one epoch: the same after a resume and in any worker."""
    state = np.random.SeedSequence([int(seed), int(epoch) + 1, int(index)]).generate_state(
        1, dtype=np.uint64
    )[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def stack_videos(samples: list[Any]) -> tuple[torch.Tensor, list[int]] | None:
    """The clips of the samples that loaded, ``[B, 3, T, H, W]``, and their indices."""
    good = [s for s in samples if s is not None]
    if not good:
        return None
    return torch.stack([s["video"] for s in good]), [int(s.get("index", i)) for i, s in enumerate(good)]


def clip_periods(
    samples: list[Any], clips: torch.Tensor, stretch: torch.Tensor | None = None
) -> torch.Tensor:
    """The cardiac period of every clip in its frames, ``float [B]`` or ``[B, V]`` (``nan``: none).

    A sample's own ``period`` (its dataset's, from a heart rate or the whole video)
    comes first, scaled by the ``stretch [B, V]`` of its views; the others are
    estimated on the clip itself, which needs about one and a half beats.
    ``clips`` are the model inputs, ``[B, 3, T, H, W]`` or ``[B, V, 3, T, H, W]``.
    """
    good = [s for s in samples if s is not None]
    known = torch.tensor([float(s.get("period", float("nan"))) for s in good], dtype=torch.float32)
    periods = known if stretch is None else known[:, None] * stretch
    missing = ~torch.isfinite(periods)
    if bool(missing.any()):
        flat = clips.flatten(0, 1) if clips.ndim == 6 else clips
        periods[missing] = estimate_periods(flat[missing.flatten()])
    return periods


class PretrainObjective:
    """Base of the pretraining objectives: held-out loss and checkpoint writing.

    Subclasses implement ``collate(samples, epoch)`` and ``compute(model, batch) ->
    (loss, figures)``; ``loss`` adds side effects (images) on top of ``compute``.
    """

    name = "pretrain"
    # tensors of the video tower the objective trains (None: all)
    trained_prefixes: tuple[str, ...] | None = None
    # invariance_weight when the config leaves it unset
    default_invariance_weight = 1.0

    def __init__(self, config: PretrainConfig, seed: int = 0, val_dataset: Any | None = None) -> None:
        self.config = config.with_invariance_default(self.default_invariance_weight)
        self.seed = seed
        self.val_dataset = val_dataset
        self._val_batch: Any = None
        # written into encoder.json next to the pretraining options (model name, preprocessing)
        self.info: dict[str, Any] = {}

    def collate(self, samples: list[Any], epoch: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(
        self, model: nn.Module, batch: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        return self.compute(model, batch)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """The loss terms on a fixed set of held-out clips with fixed masks and views."""
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return {}
        if self._val_batch is None:
            n = min(len(self.val_dataset), self.config.val_clips)
            samples = [self.val_dataset[i] for i in range(n)]
            self._val_batch = self.collate(samples, epoch=-1)
        if self._val_batch is None:
            return {}
        _, figures = self.compute(model, self._val_batch)
        return figures

    def tower(self, model: nn.Module) -> nn.Module:
        return model.tower  # type: ignore[return-value]

    def save_model(self, model: nn.Module, directory: Path) -> None:
        """The whole pretraining model (for resuming) and the encoder checkpoint (for ``--init``)."""
        from safetensors.torch import save_model

        from echoclip.models.encoders import save_encoder

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(model, str(directory / "model.safetensors"))
        save_encoder(
            self.tower(model),
            directory,
            prefixes=self.trained_prefixes,
            info={**self.info, "objective": self.name, "pretrain": self.config.to_dict()},
        )


def build_objective(
    tower: nn.Module,
    config: PretrainConfig,
    seed: int = 0,
    val_dataset: Any | None = None,
    image_dir: Path | None = None,
    preprocess: Any | None = None,
) -> tuple[nn.Module, PretrainObjective]:
    """The model to train and the objective for a video tower: masked modelling for ``videomae``,
    periodic + augmentation-invariance contrastive learning for every other tower.

    ``image_dir`` receives reconstruction images; ``preprocess`` (a ``PreprocessConfig``)
    says how to turn model input back into pixels for them.
    """
    from echoclip.models.features import tower_kind

    if tower_kind(tower) == "videomae":
        from echoclip.pretrain.mae import MaskedVideoModel, MaskedVideoObjective

        model: nn.Module = MaskedVideoModel(tower, config)
        pixels = (
            {"pixel_mean": tuple(preprocess.mean), "pixel_std": tuple(preprocess.std)} if preprocess else {}
        )
        objective = MaskedVideoObjective(
            config, model, seed=seed, val_dataset=val_dataset, image_dir=image_dir, **pixels
        )
        return model, objective
    from echoclip.pretrain.ssl_frames import FrameSSLModel, FrameSSLObjective

    model = FrameSSLModel(tower, config)
    return model, FrameSSLObjective(config, seed=seed, val_dataset=val_dataset)
