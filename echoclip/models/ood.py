"""Whether a video is like the videos a model was trained on (out-of-distribution detection).

A model answers every question with some confidence, also about a video unlike anything
it has seen (a real cine for a model trained on simulated echoes). The reference kept
with the model says when not to trust it. What it compares is not the video embedding,
which keeps only what reports describe (a real cine's nearest simulated videos are close
in those terms), but how the video tower's layers respond: the channel means and standard
deviations of every convolution's output (of every LayerNorm's, for a tower without
convolutions), averaged over frames - texture, speckle and contrast the tower was never
shown move them. A video's **score** is the Mahalanobis distance of these statistics to
those of the training videos (covariance shrunk towards its mean variance); the
**threshold** leaves ``quantile`` (2.5 % by default) of held-out (validation) videos above
it. A video scoring above it is out of distribution.

::

    reference = fit_ood(model, train_dataset, val_dataset)  # also sets model.ood_reference
    model.save_pretrained("runs/clip/final")                # writes ood.safetensors with it
    out = encode_videos(model, videos)                      # out.ood_features: the statistics
    scores, flags = score_ood(model, out.ood_features)

The reference is stored as ``ood.safetensors`` in the model directory (the mean and the
precision matrix; the threshold and its calibration counts in the file's metadata). It
records a fingerprint of the weights it was fitted with: a reference that no longer
matches the weights (a model trained further) is ignored with a warning, never used.
A model directory without the file has no reference: scores are NaN and flags ``None``.
Measured on the demo's model: docs/experiments.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from echoclip import atomic, formats
from echoclip.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:  # torch is imported where it is used: the command line reads the defaults here
    import torch

__all__ = [
    "OOD_FILE",
    "OODReference",
    "fit_ood",
    "fit_reference",
    "layer_statistics",
    "save_ood",
    "load_ood",
    "score_ood",
    "weights_fingerprint",
    "OOD_WARNING",
]

log = logging.getLogger(__name__)

OOD_FILE = "ood.safetensors"
DEFAULT_QUANTILE = 0.025  # share of in-distribution held-out videos flagged by chance
MAX_REFERENCE = 4096  # training videos whose statistics are pooled
MAX_CALIBRATION = 4096  # held-out videos read to place the threshold
MIN_CALIBRATION = 40  # below this, the 2.5 % quantile is the highest score or two
MAX_DIM = 1024  # statistics beyond this many are projected (a fixed, seeded projection)
SHRINKAGE = 0.1  # covariance + SHRINKAGE * its mean variance * identity
OOD_WARNING = "This video is unlike the videos the model was trained on; its answers should not be trusted."


class OutdatedReference(ModelError):
    """A reference file of the earlier kind (training embeddings), which the flag no longer reads."""


@contextmanager
def layer_statistics(model: Any) -> Iterator[Callable[[int], torch.Tensor]]:
    """While active, every forward pass of ``model.video_tower`` records its layers' statistics.

    Yields ``take(batch)``: the ``[batch, D]`` statistics of the clips of the last pass
    (a per-frame tower's frames averaged into their clip), which it then forgets.
    """
    import torch
    from torch import nn

    tower = getattr(model, "video_tower", model)
    layers = [m for m in tower.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    convolutions = bool(layers)
    if not layers:
        layers = [m for m in tower.modules() if isinstance(m, nn.LayerNorm)]
    if not layers:
        raise ModelError(f"{type(tower).__name__}: no convolution or LayerNorm to take statistics of")
    seen: list[torch.Tensor] = []

    def hook(module: Any, inputs: Any, out: Any) -> None:
        x = out.detach().float()
        dims = tuple(range(2, x.ndim)) if convolutions else tuple(range(1, x.ndim - 1))
        seen.append(torch.cat([x.mean(dim=dims), x.std(dim=dims)], dim=1) if dims else x)

    def take(batch: int) -> torch.Tensor:
        if not seen:
            raise ModelError("no forward pass of the video tower was recorded")
        stats = torch.cat(seen, dim=1)
        seen.clear()
        if len(stats) % batch:
            raise ModelError(f"layer statistics of {len(stats)} rows do not divide into {batch} clips")
        return _projected(stats.reshape(batch, -1, stats.shape[1]).mean(dim=1))

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield take
    finally:
        for h in handles:
            h.remove()


def _projected(stats: torch.Tensor) -> torch.Tensor:
    """At most :data:`MAX_DIM` statistics: a fixed Gaussian projection of more (seeded by the width)."""
    import torch

    d = stats.shape[1]
    if d <= MAX_DIM:
        return stats
    g = torch.Generator().manual_seed(d)
    projection = torch.randn(d, MAX_DIM, generator=g) / math.sqrt(MAX_DIM)
    return stats @ projection.to(stats.device)


@dataclass(frozen=True)
class OODReference:
    """The training videos' layer statistics (mean and precision) and the threshold above which
    a video is out of distribution.

    ``threshold`` is ``None`` until :meth:`calibrate` places it; ``calibration`` records
    how (quantile, held-out videos, how many of them fell above, and the training videos
    the statistics were pooled from).
    """

    mean: torch.Tensor  # [D] float32
    precision: torch.Tensor  # [D, D] float32
    threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # weights_fingerprint of the model whose layers gave the statistics

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or tuple(self.precision.shape) != (len(self.mean), len(self.mean)):
            raise DataError(
                f"an OOD reference needs a mean [D] and a precision [D, D], got "
                f"{list(self.mean.shape)} and {list(self.precision.shape)}"
            )

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def quantile(self) -> float | None:
        return self.calibration.get("quantile")

    def score(self, features: Any) -> np.ndarray:
        """``float32 [N]``: each row's Mahalanobis distance to the training statistics.

        A row of NaN (an unreadable video) scores NaN.
        """
        import torch

        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(
                f"layer statistics of shape {list(x.shape)} do not match the OOD reference's [n, {self.dim}]"
            )
        valid = torch.isfinite(x).all(dim=1)
        out = torch.full((len(x),), float("nan"))
        centred = x[valid] - self.mean
        out[valid] = torch.einsum("ij,jk,ik->i", centred, self.precision, centred).clamp_min(0).sqrt()
        return out.numpy()

    def flag(self, features: Any) -> np.ndarray | None:
        """``bool [N]``: above the threshold (out of distribution); ``None`` when not calibrated.

        A row that scores NaN (an unreadable video) is not flagged.
        """
        if self.threshold is None:
            return None
        return self.score(features) > self.threshold

    def calibrate(self, held_out: Any, quantile: float = DEFAULT_QUANTILE) -> OODReference:
        """The reference with its threshold at the ``1 - quantile`` point of held-out videos' scores.

        ``held_out`` are statistics of in-distribution videos the mean and covariance were not
        fitted on (a validation split). The threshold is the held-out score with ``floor(quantile
        * n)`` scores above it, so that at most ``quantile`` of them (2.5 %: 5 of 200) are
        flagged; the calibration records the quantile, threshold and counts.
        """
        if not 0 < quantile < 1:
            raise ConfigError(f"the OOD quantile must be between 0 and 1, not {quantile}")
        scores = self.score(held_out)
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            raise DataError("no held-out videos to calibrate the OOD threshold on")
        if len(scores) < MIN_CALIBRATION:
            log.warning(
                "calibrating the OOD threshold on %d held-out videos: its %.1f %% quantile rests on very few",
                len(scores),
                100 * quantile,
            )
        threshold = float(np.sort(scores)[::-1][math.floor(quantile * len(scores))])
        calibration = {
            **self.calibration,
            "quantile": quantile,
            "threshold": threshold,
            "held_out_videos": len(scores),
            "held_out_above": int((scores > threshold).sum()),
            "held_out_median": float(np.median(scores)),
        }
        return replace(self, threshold=threshold, calibration=calibration)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the reference as one safetensors file, atomically."""
        from safetensors.torch import save_file

        meta = {
            "format": formats.OOD_REFERENCE,
            "method": "layer_statistics",
            "threshold": self.threshold,
            "calibration": self.calibration,
            "fingerprint": self.fingerprint,
        }
        with atomic.writing(path) as tmp:
            save_file(
                {"mean": self.mean.float().contiguous(), "precision": self.precision.float().contiguous()},
                str(tmp),
                metadata={"ood": json.dumps(atomic.jsonable(meta))},
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OODReference:
        """Read a file written by :meth:`save`; a :class:`ModelError` naming it when it is not one."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                raw = (f.metadata() or {}).get("ood")
                names = set(f.keys())
                tensors = {n: f.get_tensor(n) for n in ("mean", "precision") if n in names}
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{path}: cannot read the OOD reference ({e})") from None
        try:
            meta = json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            raise ModelError(f"{path}: the OOD reference's metadata is not valid JSON ({e})") from None
        if isinstance(meta, dict) and meta.get("format") == formats.OOD_REFERENCE and "embeddings" in names:
            raise OutdatedReference(
                f"{path}: an embedding-similarity reference; refit it with echoclip calibrate-ood"
            )
        if not isinstance(meta, dict) or meta.get("format") != formats.OOD_REFERENCE or len(tensors) != 2:
            raise ModelError(
                f"{path}: not an OOD reference (format {formats.OOD_REFERENCE!r} with a mean and a precision)"
            )
        threshold = meta.get("threshold")
        try:
            return cls(
                mean=tensors["mean"],
                precision=tensors["precision"],
                threshold=None if threshold is None else float(threshold),
                calibration=dict(meta.get("calibration") or {}),
                fingerprint=str(meta.get("fingerprint") or ""),
            )
        except (TypeError, ValueError) as e:
            raise ModelError(f"{path}: {e}") from None


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the model's weights and preprocessing: what decides its video embeddings.

    Equal for a model and the same model saved and loaded again; different after any
    training step, so a reference is never used with weights it was not fitted on.
    """
    import torch

    digest = hashlib.sha256()
    preprocess = getattr(model, "preprocess_config", None)
    if preprocess is not None and hasattr(preprocess, "to_dict"):
        digest.update(json.dumps(atomic.jsonable(preprocess.to_dict()), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, without a copy
    return digest.hexdigest()


def fit_reference(train_features: Any, *, fingerprint: str = "") -> OODReference:
    """An uncalibrated reference: the mean and shrunk precision of the training videos' statistics."""
    import torch

    x = np.asarray(train_features, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"training statistics must be [n, D], got shape {x.shape}")
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 2:
        raise DataError("fewer than two training videos to build an OOD reference from")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / len(x)
    cov += SHRINKAGE * max(float(np.trace(cov)) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
    precision = np.linalg.inv(cov)
    return OODReference(
        torch.from_numpy(mean.astype(np.float32)),
        torch.from_numpy(((precision + precision.T) / 2).astype(np.float32)),
        calibration={"train_videos": len(x), "dim": int(x.shape[1]), "method": "layer_statistics"},
        fingerprint=fingerprint,
    )


def fit_ood(
    model: Any,
    train_data: Any,
    val_data: Any,
    *,
    quantile: float = DEFAULT_QUANTILE,
    max_reference: int = MAX_REFERENCE,
    max_calibration: int = MAX_CALIBRATION,
    seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> OODReference:
    """Fit and calibrate the OOD reference of ``model``; set it as ``model.ood_reference``.

    ``train_data`` and ``val_data`` are datasets (or anything
    :func:`~echoclip.models.embed.encode_videos` takes) of the training and held-out
    videos, read with the model's inference transform. At most ``max_reference``
    training and ``max_calibration`` held-out videos are read, drawn at random
    (seeded). Save it with ``model.save_pretrained(dir)`` or :func:`save_ood`.
    """
    from echoclip.models.embed import encode_videos

    def statistics(data: Any, limit: int, salt: int) -> np.ndarray:
        data = _sample(data, limit, seed + salt)
        options = dict(batch_size=batch_size, num_workers=num_workers, device=device, progress=progress)
        out = encode_videos(model, data, on_error="drop", ood_features=True, **options)
        assert out.ood_features is not None
        return out.ood_features

    reference = fit_reference(
        statistics(train_data, max_reference, 0), fingerprint=weights_fingerprint(model)
    )
    reference = replace(
        reference, calibration={**reference.calibration, "train_videos_total": _length(train_data)}
    )
    reference = reference.calibrate(statistics(val_data, max_calibration, 1), quantile)
    model.ood_reference = reference
    c = reference.calibration
    log.info(
        "OOD reference: %d training videos, %d statistics; threshold %.3f (%d of %d held-out videos above it)",
        c["train_videos"],
        c["dim"],
        reference.threshold,
        c["held_out_above"],
        c["held_out_videos"],
    )
    return reference


def save_ood(reference: OODReference, model_dir: str | os.PathLike[str]) -> Path:
    """Write ``reference`` into an existing model directory as ``ood.safetensors``, atomically."""
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a model directory (no config.json)")
    return reference.save(folder / OOD_FILE)


def load_ood(model_dir: str | os.PathLike[str], model: Any = None) -> OODReference | None:
    """The reference of a model directory; ``None`` when it has none.

    Given the ``model`` loaded from it, a reference fitted on other weights is ignored
    (with a warning) and ``None`` returned.
    """
    file = Path(model_dir) / OOD_FILE
    if not file.is_file():
        return None
    try:
        reference = OODReference.load(file)
    except OutdatedReference as e:
        log.warning("%s; not used", e)
        return None
    if model is not None and reference.fingerprint != weights_fingerprint(model):
        log.warning(
            "%s: fitted on other weights than the model's; not used (refit it with echoclip calibrate-ood)",
            file,
        )
        return None
    return reference


def score_ood(model: Any, features: Any, rows: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(scores float32 [N], flags bool [N] or None)`` of videos' layer statistics
    (``encode_videos(...).ood_features``) by the model's reference.

    Without a reference (``model.ood_reference`` absent or ``None``), or without statistics
    (``features`` ``None``: ``rows`` videos), the scores are NaN and the flags ``None``:
    the model cannot say, which is not an error.
    """
    reference: OODReference | None = getattr(model, "ood_reference", None)
    if reference is None or features is None:
        n = rows if features is None else len(np.atleast_2d(np.asarray(features)))
        return np.full(int(n or 0), np.nan, dtype=np.float32), None
    scores = reference.score(features)
    flags = None if reference.threshold is None else scores > reference.threshold
    return scores, flags


def _length(data: Any) -> int:
    try:
        return len(data)
    except TypeError:
        return 0


def _sample(data: Any, limit: int, seed: int) -> Any:
    """At most ``limit`` items of ``data`` (a random, seeded, ordered subset), as a sequence."""
    from torch.utils.data import Subset

    n = _length(data)
    if n <= limit:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return Subset(data, keep.tolist())
