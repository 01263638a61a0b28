"""Batch embedding of videos and reports into L2-normalised ``float32`` numpy arrays.

These are what the retrieval index and zero-shot prediction consume. Work runs on a
GPU when one is present (the model is moved there), in inference mode, with a
progress bar.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from echoclip.errors import VideoReadError

log = logging.getLogger(__name__)


def pick_device(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` if given; else the model's device, or the GPU for a model still on the CPU."""
    if device is not None:
        return torch.device(device)
    current = next(model.parameters()).device
    if current.type == "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return current


class _Clips(torch.utils.data.Dataset):
    """``(position, clip [3,T,H,W] or None)`` for any of the inputs :func:`embed_videos` accepts."""

    def __init__(self, videos: Any, transform: Any) -> None:
        self.videos = videos
        self.transform = transform

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        try:
            item = self.videos[i]
        except VideoReadError as e:
            log.warning("skipping item %d: %s", i, e)
            return i, None
        if isinstance(item, dict):
            item = item.get("video")
        if item is None:
            return i, None
        if isinstance(item, torch.Tensor):
            return i, item.float()
        if isinstance(item, np.ndarray) and item.dtype != np.uint8:
            return i, torch.from_numpy(item).float()
        return i, self.transform(item)  # a Video, or uint8 frames [T, H, W, 3]


def _collate(batch: list[tuple[int, torch.Tensor | None]]) -> tuple[int, list[int], torch.Tensor | None]:
    """``(batch size, positions read, their clips stacked)``: unreadable samples drop out here."""
    kept = [(i, clip) for i, clip in batch if clip is not None]
    clips = torch.stack([clip for _, clip in kept]) if kept else None
    return len(batch), [i for i, _ in kept], clips


def embed_videos(
    model: Any,
    videos: Any,
    batch_size: int = 16,
    *,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Video embeddings ``float32 [N, D]``, one unit-norm row per input, in input order.

    ``videos`` is a dataset yielding dicts with a ``"video"`` clip (``Manifest``,
    ``EchoNetDynamic``), a sequence of :class:`~echoclip.data.video.Video` objects or
    ``uint8 [T, H, W, 3]`` frames (preprocessed with the model's transform), or
    preprocessed clips ``float [3, T, H, W]`` (a list or one ``[N, 3, T, H, W]`` tensor).
    A sample that cannot be read gets a row of NaN, and the count is logged.
    """
    from tqdm.auto import tqdm

    from echoclip.data.transforms import VideoTransform

    dev = pick_device(model, device)
    model.to(dev)
    clips = _Clips(videos, VideoTransform(model.preprocess_config))
    loader = torch.utils.data.DataLoader(
        clips,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
    )
    out = np.full((len(clips), model.config.embed_dim), np.nan, dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(clips), unit="video", disable=not progress) as bar:
            for n, idx, batch in loader:
                if batch is not None:
                    features = model.encode_video(batch.to(dev, non_blocking=True), normalize=True)
                    out[idx] = features.float().cpu().numpy()
                bar.update(n)
    finally:
        model.train(was_training)
    failed = int(np.isnan(out[:, 0]).sum())
    if failed:
        log.warning("%d of %d videos could not be read; their rows are NaN", failed, len(out))
    return out


def embed_reports(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 256,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Report embeddings ``float32 [N, D]``, unit norm, in input order."""
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise TypeError("embed_reports takes a sequence of texts, not one string")
    dev = pick_device(model, device)
    model.to(dev)
    texts = list(texts)
    out = np.empty((len(texts), model.config.embed_dim), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(texts), unit="report", disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                ids = tokenizer(chunk, context_length=model.context_length).to(dev)
                out[start : start + len(chunk)] = model.encode_text(ids, normalize=True).float().cpu().numpy()
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return out
