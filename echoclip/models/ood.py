"""Whether a video is like the videos a model was trained on (out-of-distribution detection).

A model answers every question with some confidence, also about a video unlike anything
it has seen (a real cine for a model trained on simulated echoes). The reference kept
with the model says when not to trust it: a sample of unit-length training video
embeddings. A video's **score** is its mean cosine similarity to its ``k`` nearest
reference embeddings; the **threshold** is the ``quantile`` (2.5 % by default) of the
scores of held-out (validation) videos, so that about that share of in-distribution
videos is flagged by chance. A video scoring below it is out of distribution.

::

    reference = fit_ood(model, train_dataset, val_dataset)  # also sets model.ood_reference
    model.save_pretrained("runs/clip/final")                # writes ood.safetensors with it
    scores, flags = score_ood(echoclip.load_model("runs/clip/final"), embeddings)

The reference is stored as ``ood.safetensors`` in the model directory (float16
embeddings; ``k``, the threshold and its calibration counts in the file's metadata). It
records a fingerprint of the weights it was fitted with: a reference that no longer
matches the weights (a model trained further) is ignored with a warning, never used.
A model directory without the file has no reference: scores are NaN and flags ``None``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
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
    "save_ood",
    "load_ood",
    "score_ood",
    "weights_fingerprint",
    "OOD_WARNING",
]

log = logging.getLogger(__name__)

OOD_FILE = "ood.safetensors"
DEFAULT_K = 10
DEFAULT_QUANTILE = 0.025  # share of in-distribution held-out videos flagged by chance
MAX_REFERENCE = 2048  # training embeddings kept: enough for k-NN, small next to the weights
MAX_CALIBRATION = 4096  # held-out videos embedded to place the threshold
MIN_CALIBRATION = 40  # below this, the 2.5 % quantile is the lowest score or two
_ROWS_PER_CHUNK = 4096  # bounds the [rows, reference] similarity matrix
OOD_WARNING = "This video is unlike the videos the model was trained on; its answers should not be trusted."


@dataclass(frozen=True)
class OODReference:
    """Training video embeddings, ``k`` and the threshold below which a video is out of distribution.

    ``threshold`` is ``None`` until :meth:`calibrate` places it; ``calibration`` records
    how (quantile, held-out videos, how many of them fell below, and the training
    videos the sample was drawn from).
    """

    embeddings: torch.Tensor  # [n, D] float16, unit rows
    k: int = DEFAULT_K
    threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # weights_fingerprint of the model that made the embeddings

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or len(self.embeddings) == 0:
            raise DataError(f"an OOD reference needs [n, D] embeddings, got {list(self.embeddings.shape)}")
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, not {self.k}")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def quantile(self) -> float | None:
        return self.calibration.get("quantile")

    def score(self, embeddings: Any) -> np.ndarray:
        """``float32 [N]``: each row's mean cosine similarity to its ``k`` nearest reference rows.

        Rows are scaled to unit length first; a row of NaN (an unreadable video) scores NaN.
        """
        import torch

        emb = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        if emb.ndim == 1:
            emb = emb[None]
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise DataError(
                f"embeddings of shape {list(emb.shape)} do not match the OOD reference's [n, {self.dim}]"
            )
        valid = torch.isfinite(emb).all(dim=1)
        out = torch.full((len(emb),), float("nan"))
        ref = self.embeddings.float()
        k = min(self.k, len(ref))
        rows = torch.nn.functional.normalize(emb[valid], dim=1)
        scores = [(chunk @ ref.T).topk(k, dim=1).values.mean(dim=1) for chunk in rows.split(_ROWS_PER_CHUNK)]
        if scores:
            out[valid] = torch.cat(scores)
        return out.numpy()

    def flag(self, embeddings: Any) -> np.ndarray | None:
        """``bool [N]``: below the threshold (out of distribution); ``None`` when not calibrated.

        A row that scores NaN (an unreadable video) is not flagged.
        """
        if self.threshold is None:
            return None
        return self.score(embeddings) < self.threshold

    def calibrate(self, held_out: Any, quantile: float = DEFAULT_QUANTILE) -> OODReference:
        """The reference with its threshold at the ``quantile`` of held-out videos' scores.

        ``held_out`` are embeddings of in-distribution videos the reference does not hold
        (a validation split): a video in the reference finds itself among its nearest
        rows and would set the threshold too high. The threshold is the held-out score with ``floor(quantile *
        n)`` scores below it, so that at most ``quantile`` of them (2.5 %: 5 of 200) are
        flagged; the calibration records the quantile, threshold and counts.
        """
        if not 0 < quantile < 1:
            raise ConfigError(f"the OOD quantile must be between 0 and 1, not {quantile}")
        scores = self.score(held_out)
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            raise DataError("no held-out video embeddings to calibrate the OOD threshold on")
        if len(scores) < MIN_CALIBRATION:
            log.warning(
                "calibrating the OOD threshold on %d held-out videos: its %.1f %% quantile rests on very few",
                len(scores),
                100 * quantile,
            )
        # the score with floor(quantile * n) held-out scores below it: at most that share of
        # in-distribution videos is flagged (an interpolated quantile flags more of few videos)
        threshold = float(np.sort(scores)[math.floor(quantile * len(scores))])
        below = int((scores < threshold).sum())
        calibration = {
            **self.calibration,
            "quantile": quantile,
            "threshold": threshold,
            "held_out_videos": len(scores),
            "held_out_below": below,
            "held_out_median": float(np.median(scores)),
        }
        return replace(self, threshold=threshold, calibration=calibration)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the reference as one safetensors file, atomically."""
        import torch
        from safetensors.torch import save_file

        meta = {
            "format": formats.OOD_REFERENCE,
            "k": self.k,
            "threshold": self.threshold,
            "calibration": self.calibration,
            "fingerprint": self.fingerprint,
        }
        with atomic.writing(path) as tmp:
            save_file(
                {"embeddings": self.embeddings.to(torch.float16).contiguous()},
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
                embeddings = f.get_tensor("embeddings") if "embeddings" in f.keys() else None  # noqa: SIM118
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{path}: cannot read the OOD reference ({e})") from None
        try:
            meta = json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            raise ModelError(f"{path}: the OOD reference's metadata is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != formats.OOD_REFERENCE or embeddings is None:
            raise ModelError(
                f"{path}: not an OOD reference (format {formats.OOD_REFERENCE!r} with embeddings)"
            )
        threshold = meta.get("threshold")
        try:
            return cls(
                embeddings=embeddings,
                k=int(meta.get("k", DEFAULT_K)),
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


def fit_reference(
    train_embeddings: Any,
    *,
    k: int = DEFAULT_K,
    max_reference: int = MAX_REFERENCE,
    seed: int = 0,
    fingerprint: str = "",
) -> OODReference:
    """An uncalibrated reference: at most ``max_reference`` rows of ``train_embeddings``,
    drawn at random (seeded), scaled to unit length and stored as float16."""
    import torch

    emb = np.asarray(train_embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise DataError(f"training embeddings must be [n, D], got shape {emb.shape}")
    emb = emb[np.isfinite(emb).all(axis=1)]
    if len(emb) == 0:
        raise DataError("no training video embeddings to build an OOD reference from")
    n_train = len(emb)
    if len(emb) > max_reference:
        keep = np.sort(np.random.default_rng(seed).choice(len(emb), max_reference, replace=False))
        emb = emb[keep]
    rows = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1).to(torch.float16)
    return OODReference(
        rows, k=k, calibration={"train_videos": n_train, "reference_rows": len(rows)}, fingerprint=fingerprint
    )


def fit_ood(
    model: Any,
    train_data: Any,
    val_data: Any,
    *,
    k: int = DEFAULT_K,
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
    training and ``max_calibration`` held-out videos are embedded, drawn at random
    (seeded). Save it with ``model.save_pretrained(dir)`` or :func:`save_ood`.
    """
    from echoclip.models.embed import encode_videos

    def embed(data: Any, limit: int, salt: int) -> np.ndarray:
        data = _sample(data, limit, seed + salt)
        options = dict(batch_size=batch_size, num_workers=num_workers, device=device, progress=progress)
        return encode_videos(model, data, on_error="drop", **options).features

    train = embed(train_data, max_reference, 0)
    reference = fit_reference(
        train, k=k, max_reference=max_reference, seed=seed, fingerprint=weights_fingerprint(model)
    )
    reference = replace(reference, calibration={**reference.calibration, "train_videos": _length(train_data)})
    reference = reference.calibrate(embed(val_data, max_calibration, 1), quantile)
    model.ood_reference = reference
    c = reference.calibration
    log.info(
        "OOD reference: %d training videos, k=%d; threshold %.4f (%d of %d held-out videos below it)",
        c["reference_rows"],
        reference.k,
        reference.threshold,
        c["held_out_below"],
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
    reference = OODReference.load(file)
    if model is not None and reference.fingerprint != weights_fingerprint(model):
        log.warning(
            "%s: fitted on other weights than the model's; not used (refit it with echoclip calibrate-ood)",
            file,
        )
        return None
    return reference


def score_ood(model: Any, embeddings: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(scores float32 [N], flags bool [N] or None)`` of video embeddings by the model's reference.

    Without a reference (``model.ood_reference`` absent or ``None``) the scores are NaN
    and the flags ``None``: the model cannot say, which is not an error.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim == 1:
        emb = emb[None]
    reference: OODReference | None = getattr(model, "ood_reference", None)
    if reference is None:
        return np.full(len(emb), np.nan, dtype=np.float32), None
    scores = reference.score(emb)
    flags = None if reference.threshold is None else scores < reference.threshold
    return scores, flags


def _length(data: Any) -> int:
    try:
        return len(data)
    except TypeError:
        return 0


def _sample(data: Any, limit: int, seed: int) -> Any:
    """At most ``limit`` items of ``data`` (a random, seeded, ordered subset), as a sequence."""
    n = _length(data)
    if n <= limit:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return _Subset(data, keep.tolist())


class _Subset:
    """Items ``indices`` of a dataset, in that order: what ``encode_videos`` reads."""

    def __init__(self, data: Any, indices: list[int]) -> None:
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.data[self.indices[i]]
