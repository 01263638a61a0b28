"""The one place that runs a model over videos and texts: batches, device, eval mode, failures.

Zero-shot prediction, validation during training, evaluation, fine-tuning reports,
the web service and the command line all call these functions, so a video becomes the
same embedding whichever way it arrives. Videos may be given as

- a dataset yielding dicts with a ``"video"`` clip (``Manifest``, ``EchoNetDynamic``;
  an item's other fields travel with it as metadata; ``None`` for an unreadable file),
- a sequence of file paths, :class:`~echoclip.data.video.Video` objects or ``uint8
  [T, H, W, 3]`` frames (turned into clips by the model's transform), or
- preprocessed clips ``float [3, T, H, W]`` (a list, or one ``[N, 3, T, H, W]`` tensor).

What an unreadable video becomes is the caller's explicit choice (``on_error``): a row
of NaN (``"nan"``, rows stay aligned with the inputs), no row (``"drop"``), or the
error itself (``"raise"``). The model runs where it is, unless ``device`` is given (then
it is moved there); :func:`default_device` is the GPU when one is present.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from echoclip.data.scale import scale_tensor
from echoclip.errors import ConfigError, DataError, VideoReadError
from echoclip.ranks import PARTS, Ranks, check_parts, part_dir, rank_of_part

log = logging.getLogger(__name__)

OnError = Literal["nan", "drop", "raise"]
ON_ERROR = ("nan", "drop", "raise")


def default_device() -> torch.device:
    """The GPU when one is present, else the CPU: what the command line runs on by default."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where ``model`` runs: ``device`` when given (the model is moved there), else where it is."""
    if device is not None:
        dev = torch.device(device)
        model.to(dev)
        return dev
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@dataclass
class Encoded:
    """What :func:`encode_videos` returns: one row per input (``"nan"``) or per readable input."""

    features: np.ndarray  # [rows, K] float32
    positions: np.ndarray  # the input position of each row
    meta: list[dict[str, Any]] = field(default_factory=list)  # each row's other fields (dataset items)
    failed: list[int] = field(default_factory=list)  # input positions that could not be read
    # each row's layer statistics for out-of-distribution scores (echoclip.models.ood), or None
    ood_features: np.ndarray | None = None


class _Inputs(torch.utils.data.Dataset):
    """``(position, clips [n, 3, T, H, W] or None, scale [2], metadata)`` of any input :func:`encode_videos` takes.

    The scale is the clips' cm per pixel (NaN: unknown, as for preprocessed clips given as tensors).
    """

    def __init__(
        self, videos: Any, transform: Any, clips: int, read_options: dict[str, Any], on_error: OnError
    ) -> None:
        self.videos, self.transform, self.clips = videos, transform, clips
        self.read_options, self.on_error = read_options, on_error

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, torch.Tensor, dict[str, Any]]:
        unknown = scale_tensor(None)
        try:
            item = self.videos[i]
            if isinstance(item, str | os.PathLike):
                from echoclip.data.video import load_video

                item = load_video(item, **self.read_options)
        except VideoReadError as e:
            if self.on_error == "raise":
                raise
            log.warning("skipping item %d: %s", i, e)
            return i, None, unknown, {}
        meta: dict[str, Any] = {}
        if isinstance(item, dict):
            meta = {k: v for k, v in item.items() if k not in ("video", "cm_per_px")}
            if item.get("video") is not None:
                return i, self._as_clips(item["video"]), item.get("cm_per_px", unknown), meta
            item = None
        if item is None:
            if self.on_error == "raise":
                raise VideoReadError(f"item {i}: could not be read (the dataset's skipped list says why)")
            return i, None, unknown, meta
        if isinstance(item, torch.Tensor | np.ndarray) and not _is_frames(item):
            return i, self._as_clips(item), unknown, meta
        if self.clips > 1:
            clips, scale = self.transform.scaled_clips(item, self.clips)
            return i, clips, scale, meta
        if not hasattr(self.transform, "scaled"):  # a plain callable: the scale is not known
            return i, self.transform(item)[None], unknown, meta
        clip, scale = self.transform.scaled(item)  # a Video, or uint8 frames [T, H, W, 3]
        return i, clip[None], scale, meta

    @staticmethod
    def _as_clips(item: Any) -> torch.Tensor:
        """Preprocessed clips ``[3, T, H, W]`` or ``[n, 3, T, H, W]`` as ``float [n, 3, T, H, W]``."""
        x = (torch.from_numpy(item) if isinstance(item, np.ndarray) else item).float()
        return x if x.ndim == 5 else x[None]


def _is_frames(item: Any) -> bool:
    """Decoded frames ``uint8 [T, H, W, 3]`` (a transform's input) rather than a preprocessed clip."""
    return isinstance(item, np.ndarray) and item.dtype == np.uint8


def _collate(
    batch: list[Any],
) -> tuple[int, list[int], torch.Tensor | None, torch.Tensor | None, list[dict[str, Any]]]:
    """``(batch size, positions read, their clips [B, n, 3, T, H, W], scales [B, 2], their metadata)``."""
    kept = [(i, x, s, m) for i, x, s, m in batch if x is not None]
    clips = torch.stack([x for _, x, _, _ in kept]) if kept else None
    scales = torch.stack([torch.as_tensor(s, dtype=torch.float32) for _, _, s, _ in kept]) if kept else None
    return len(batch), [i for i, _, _, _ in kept], clips, scales, [m for _, _, _, m in kept]


def encode_videos(
    model: Any,
    videos: Any,
    *,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    normalize: bool = True,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_error: OnError = "nan",
    clips: int = 1,
    transform: Any = None,
    read_options: dict[str, Any] | None = None,
    ood_features: bool | None = None,
) -> Encoded:
    """Run ``encode`` over every video, in eval and inference mode.

    ``encode`` maps clips ``[B, 3, T, H, W]`` to outputs ``[B, K]`` (or one per frame,
    ``[B, T, K]``); by default the model's ``encode_video`` (unit length when ``normalize``).

    ``clips > 1`` takes that many clips spread along each decoded video (a dataset
    item may also hold ``[n, 3, T, H, W]``); their outputs are averaged (and, with
    ``normalize``, scaled to unit length again). ``read_options`` go to
    :func:`~echoclip.data.video.load_video` for inputs given as paths (``fps=`` for a
    file that does not record its frame rate).

    ``ood_features`` also records each video's layer statistics in the same forward pass
    (:func:`echoclip.models.ood.layer_statistics`, averaged over its clips), which
    :func:`~echoclip.models.ood.score_ood` scores; by default when the model has an OOD
    reference.
    """
    from tqdm.auto import tqdm

    from echoclip.models.ood import layer_statistics

    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    if clips < 1:
        raise ConfigError(f"clips per video must be at least 1, got {clips}")
    videos = _as_sequence(videos)
    if transform is None and _needs_transform(videos):
        transform = model_transform(model)
    dev = model_device(model, device)
    scaled = encode is None and bool(getattr(model, "uses_scale", False))
    if encode is None:
        encode = functools.partial(model.encode_video, normalize=normalize)
    inputs = _Inputs(videos, transform, clips, dict(read_options or {}), on_error)
    loader = torch.utils.data.DataLoader(
        inputs,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
    )
    chunks: list[np.ndarray] = []
    stats: list[np.ndarray] = []
    positions: list[int] = []
    meta: list[dict[str, Any]] = []
    if ood_features is None:
        ood_features = getattr(model, "ood_reference", None) is not None
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=len(inputs), unit="video", disable=not progress) as bar,
            layer_statistics(model) if ood_features else contextlib.nullcontext() as take,
        ):
            for n, idx, batch, scales, batch_meta in loader:
                if batch is not None:
                    scale = scales.to(dev) if scaled else None
                    chunks.append(_run_batch(encode, batch.to(dev, non_blocking=True), normalize, scale))
                    if take is not None:
                        b, clips_per_item = batch.shape[:2]
                        stats.append(
                            take(b * clips_per_item).reshape(b, clips_per_item, -1).mean(dim=1).cpu().numpy()
                        )
                    positions.extend(idx)
                    meta.extend(batch_meta)
                bar.update(n)
    finally:
        model.train(was_training)
    read = set(positions)
    failed = [i for i in range(len(inputs)) if i not in read]
    if failed:
        log.warning("%d of %d videos could not be read", len(failed), len(inputs))
    width = int(getattr(getattr(model, "config", None), "embed_dim", 0))
    features = np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)
    layer_stats = (np.concatenate(stats) if stats else np.zeros((0, 0), np.float32)) if ood_features else None
    rows = np.asarray(positions, dtype=np.int64)
    if on_error == "nan":
        full = np.full((len(inputs), *features.shape[1:]), np.nan, dtype=np.float32)
        full[rows] = features
        if layer_stats is not None:
            aligned = np.full((len(inputs), layer_stats.shape[1]), np.nan, dtype=np.float32)
            aligned[rows] = layer_stats
            layer_stats = aligned
        by_position = dict(zip(positions, meta, strict=True))
        return Encoded(
            full,
            np.arange(len(inputs)),
            [by_position.get(i, {}) for i in range(len(inputs))],
            failed,
            layer_stats,
        )
    return Encoded(features, rows, meta, failed, layer_stats)


def _run_batch(
    encode: Callable[..., torch.Tensor], x: torch.Tensor, normalize: bool, scale: torch.Tensor | None = None
) -> np.ndarray:
    """``[B, n, 3, T, H, W]`` -> ``[B, K]``: the outputs of each item's clips, averaged.

    An ``encode`` with one output per frame (``[B*n, T, K]``) keeps them all instead:
    ``[B, n*T, K]``, each item's frames of every clip in order. ``scale`` (``[B, 2]``)
    goes to a model's ``encode_video`` as ``cm_per_px``, once per clip.
    """
    b, n = x.shape[:2]
    if scale is None:
        out = encode(x.flatten(0, 1).float())
    else:
        out = encode(x.flatten(0, 1).float(), cm_per_px=scale.repeat_interleave(n, dim=0))
    if out.ndim == 3:
        return out.reshape(b, n * out.shape[1], -1).float().cpu().numpy()
    if n > 1:
        out = out.reshape(b, n, -1).mean(dim=1)
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
    return out.float().cpu().numpy()


def embed_videos(
    model: Any,
    videos: Any,
    batch_size: int = 16,
    *,
    on_error: OnError = "nan",
    clips: int = 1,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    transform: Any = None,
    read_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Video embeddings ``float32 [N, D]``, unit length, in input order.

    An unreadable video gets a row of NaN (``on_error="nan"``), no row (``"drop"``) or
    raises its :class:`~echoclip.errors.VideoReadError` (``"raise"``). Example::

        emb = echoclip.embed_videos(model, ["a.dcm", "b.avi"], on_error="raise")
    """
    return encode_videos(
        model,
        videos,
        batch_size=batch_size,
        on_error=on_error,
        clips=clips,
        device=device,
        num_workers=num_workers,
        progress=progress,
        transform=transform,
        read_options=read_options,
    ).features


def embed_reports(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 256,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    context_length: int | None = None,
) -> np.ndarray:
    """Report embeddings ``float32 [N, D]``, unit length, in input order.

    ``context_length`` (tokens per text) defaults to the model's.
    """
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise TypeError("embed_reports takes a sequence of texts, not one string")
    dev = model_device(model, device)
    texts = list(texts)
    if context_length is None:
        context_length = getattr(model, "context_length", None)
    chunks: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(texts), unit="report", disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                ids = (
                    tokenizer(chunk)
                    if context_length is None
                    else tokenizer(chunk, context_length=context_length)
                )
                ids = torch.as_tensor(ids, dtype=torch.long).to(dev)
                chunks.append(model.encode_text(ids, normalize=True).float().cpu().numpy())
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    dim = int(getattr(getattr(model, "config", None), "embed_dim", 0))
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)


# ---------------------------------------------------------------------------------------------
# Studies: many videos of many views, one embedding

DEFAULT_MAX_VIDEOS = 64  # videos pooled per study; more are subsampled (see study_subsample)
VIEW_COLUMNS = ("view_pred", "view")  # where a study's views come from, first found first
_STUDIES_PER_BATCH = 256


@dataclass
class StudyEmbeddings:
    """What :func:`embed_studies` and :func:`pool_studies` return: one row per study that has a
    readable video, in order of first appearance."""

    study_ids: list[Any]
    features: np.ndarray  # [S, D] unit length
    rows: list[np.ndarray]  # per study: the input rows (videos) it pooled, in input order
    views: list[list[Any]]  # per study: the view of each pooled video (None: unknown)
    skipped: list[Any] = field(default_factory=list)  # studies none of whose videos could be read
    failed: list[int] = field(default_factory=list)  # input rows that could not be read
    subsampled: list[Any] = field(default_factory=list)  # studies that had more than max_videos videos
    meta: list[dict[str, Any]] = field(
        default_factory=list
    )  # per study: its first pooled video's item fields
    # per pooled video (the rows of every study, concatenated): layer statistics for OOD scores, or None
    video_ood_features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.study_ids)

    @property
    def video_study_ids(self) -> list[Any]:
        """The study of each pooled video, in the order of ``video_ood_features``."""
        return [sid for sid, rows in zip(self.study_ids, self.rows, strict=True) for _ in rows]


def study_subsample(study_id: Any, n: int, max_videos: int) -> np.ndarray:
    """The positions (sorted) of the ``max_videos`` videos kept of a study of ``n``.

    Seeded by the study id (its text's SHA-256), so a study keeps the same videos on every
    run, machine and process, whatever other studies the data holds.
    """
    import hashlib

    if n <= max_videos:
        return np.arange(n)
    seed = int.from_bytes(hashlib.sha256(str(study_id).encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_videos, replace=False))


def study_view_column(columns: Sequence[str], choice: str = "auto") -> str | None:
    """The column that gives each video's view at study level, or ``None`` (unknown).

    ``"auto"``: the first of :data:`VIEW_COLUMNS` present (``view_pred``, a view
    classifier's, as inference will have them; else ``view``); ``"none"``: none; any other
    name: that column (which must exist).
    """
    if choice == "none":
        return None
    if choice == "auto":
        return next((c for c in VIEW_COLUMNS if c in columns), None)
    return choice


def table_views(table: Any, choice: str = "auto", where: Any = "the data set") -> list[str | None] | None:
    """Each row's view from the column ``choice`` names (:func:`study_view_column`; empty or
    missing cells are unknown, ``None``), or ``None`` when it names none."""
    column = study_view_column(list(table.columns), choice)
    if column is None:
        return None
    if column not in table.columns:
        raise DataError(f"{where}: no view column {column!r} (it has: {sorted(map(str, table.columns))})")
    return [view_name(v) for v in table[column]]


def view_name(value: Any) -> str | None:
    """A table cell as a view name; empty and missing cells are unknown (``None``)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def pool_studies(
    model: Any,
    embeddings: Any,
    study_ids: Sequence[Any],
    views: Sequence[Any] | None = None,
    *,
    max_videos: int = DEFAULT_MAX_VIDEOS,
    device: str | torch.device | None = None,
) -> StudyEmbeddings:
    """Pool video embeddings ``[N, D]`` into one unit embedding per study with
    ``model.encode_study`` (the model's study pooling; the mean when it has none).

    Rows of a study are found by ``study_ids`` (one per row); ``views`` (one per row, names,
    ``None`` for unknown) go to view-aware poolings. Rows of NaN (unreadable videos) are left
    out; a study with no other row is listed in ``skipped``. A study of more than
    ``max_videos`` rows keeps the subsample of :func:`study_subsample`. Studies are pooled in
    padded batches, with a mask.
    """
    if max_videos < 1:
        raise ConfigError(f"max_videos must be at least 1, got {max_videos}")
    emb = np.asarray(
        embeddings.detach().cpu() if isinstance(embeddings, torch.Tensor) else embeddings, dtype=np.float32
    )
    if emb.ndim != 2:
        raise DataError(f"study pooling takes video embeddings [N, D], got shape {list(emb.shape)}")
    if len(study_ids) != len(emb):
        raise DataError(f"got {len(study_ids)} study ids for {len(emb)} video embeddings")
    if views is not None and len(views) != len(emb):
        raise DataError(f"got {len(views)} views for {len(emb)} video embeddings")
    readable = np.isfinite(emb).all(axis=1)
    groups: dict[Any, list[int]] = {}
    for i, sid in enumerate(study_ids):
        groups.setdefault(sid, []).append(i)
    kept_ids, kept_rows, skipped, subsampled = [], [], [], []
    for sid, rows in groups.items():
        real = np.asarray([r for r in rows if readable[r]], dtype=np.int64)
        if not len(real):
            skipped.append(sid)
            continue
        if len(real) > max_videos:
            subsampled.append(sid)
            real = real[study_subsample(sid, len(real), max_videos)]
        kept_ids.append(sid)
        kept_rows.append(real)
    study_views = [[None if views is None else views[r] for r in rows] for rows in kept_rows]
    if skipped:
        log.warning("%d studies have no readable video and are skipped", len(skipped))
    dev = model_device(model, device)
    dim = emb.shape[1]
    chunks: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(kept_rows), _STUDIES_PER_BATCH):
                batch = kept_rows[start : start + _STUDIES_PER_BATCH]
                width = max(len(r) for r in batch)
                padded = np.zeros((len(batch), width, dim), np.float32)
                mask = torch.zeros(len(batch), width, dtype=torch.bool)
                for j, rows in enumerate(batch):
                    padded[j, : len(rows)] = emb[rows]
                    mask[j, : len(rows)] = True
                batch_views = None if views is None else study_views[start : start + len(batch)]
                out = model.encode_study(
                    torch.from_numpy(padded).to(dev), views=batch_views, mask=mask.to(dev), normalize=True
                )
                chunks.append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return StudyEmbeddings(kept_ids, features, kept_rows, study_views, skipped, [], subsampled)


def embed_studies(
    model: Any,
    data: Any,
    *,
    study_ids: Sequence[Any] | None = None,
    views: Sequence[Any] | None = None,
    max_videos: int = DEFAULT_MAX_VIDEOS,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    transform: Any = None,
    read_options: dict[str, Any] | None = None,
) -> StudyEmbeddings:
    """One embedding per study: each video embedded (:func:`encode_videos`), then a study's
    videos pooled by ``model.encode_study`` (:func:`pool_studies`).

    ``data`` is a dataset with a ``table`` of one row per video (a :class:`Manifest`: its
    ``study_id`` column groups the rows, its ``view_pred`` or else ``view`` column gives the
    views), or anything :func:`encode_videos` takes, with ``study_ids=`` (one per video;
    default: a dataset item's ``study_id``, else one study of all the videos) and
    ``views=`` (default: unknown). A study of more than ``max_videos`` videos is subsampled
    before any is decoded (:func:`study_subsample`, seeded by its id). Unreadable videos
    are left out (``failed``; a dataset's ``skipped`` log says why); a study with none
    left is listed in ``skipped``. Example::

        studies = embed_studies(model, open_dataset("sim", "test", VideoTransform(cfg)))
        studies.study_ids, studies.features  # [S], [S, D]
    """
    table = getattr(data, "table", None)
    if study_ids is None and table is not None and "study_id" in getattr(table, "columns", ()):
        study_ids = table["study_id"].tolist()
        if views is None:
            views = table_views(table)
    if study_ids is not None and views is not None and len(views) != len(study_ids):
        raise DataError(f"got {len(views)} views for {len(study_ids)} videos")
    chosen, subsampled = None, []
    if study_ids is not None:  # subsample before decoding: a 200-video study decodes max_videos
        if len(study_ids) != len(data):
            raise DataError(f"got {len(study_ids)} study ids for {len(data)} videos")
        groups: dict[Any, list[int]] = {}
        for i, sid in enumerate(study_ids):
            groups.setdefault(sid, []).append(i)
        subsampled = [s for s, r in groups.items() if len(r) > max_videos]
        chosen = np.sort(
            np.concatenate([np.asarray(r)[study_subsample(s, len(r), max_videos)] for s, r in groups.items()])
        ).astype(np.int64)
        if len(chosen) < len(data):
            data = [data[int(i)] for i in chosen] if isinstance(data, list | tuple) else _Rows(data, chosen)
    encoded = encode_videos(
        model,
        data,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        on_error="nan",
        transform=transform,
        read_options=read_options,
    )
    rows = np.arange(len(encoded.features)) if chosen is None else chosen  # input row of each encoded row
    if study_ids is None:
        read = [m for m in encoded.meta if m]
        if read and all("study_id" in m for m in read):  # an unreadable item's study is not known
            ids = [m.get("study_id") for m in encoded.meta]
        else:  # videos given without study ids: one study
            ids = [0] * len(encoded.meta)
    else:
        ids = [study_ids[int(r)] for r in rows]
    row_views = None if views is None else [views[int(r)] for r in rows]
    pooled = pool_studies(model, encoded.features, ids, row_views, max_videos=max_videos, device=device)
    pooled.failed = [int(rows[i]) for i in encoded.failed]
    pooled.skipped = [sid for sid in pooled.skipped if sid is not None]
    pooled.subsampled = subsampled or pooled.subsampled
    if encoded.ood_features is not None:
        pooled.video_ood_features = encoded.ood_features[np.concatenate(pooled.rows)] if len(pooled) else None
    pooled.meta = [encoded.meta[int(r[0])] for r in pooled.rows]
    pooled.rows = [rows[r] for r in pooled.rows]
    return pooled


def model_transform(model: Any) -> Any:
    """The model's inference transform (from its ``preprocess_config``)."""
    from echoclip.data.transforms import VideoTransform
    from echoclip.errors import ModelError

    config = getattr(model, "preprocess_config", None)
    if config is None:
        raise ModelError("the model has no preprocess_config; pass transform= to turn videos into clips")
    return VideoTransform(config)


def _as_sequence(videos: Any) -> Any:
    """A sequence of items (or a dataset) from any accepted input."""
    from echoclip.data.video import Video

    if isinstance(videos, Video | str | os.PathLike):
        return [videos]
    if isinstance(videos, torch.Tensor):
        if videos.ndim == 4:
            return [videos]
        if videos.ndim == 5:
            return list(videos)
        raise DataError(f"clips must be [3, T, H, W] or [N, 3, T, H, W], got {list(videos.shape)}")
    if isinstance(videos, np.ndarray):
        if videos.ndim == 4 and videos.dtype == np.uint8:
            return [videos]
        return list(videos)
    if not (hasattr(videos, "__getitem__") and hasattr(videos, "__len__")):
        raise DataError(
            f"cannot take videos from a {type(videos).__name__}; give file paths, Videos, clips or a dataset"
        )
    if len(videos) == 0:
        raise DataError("no videos given")
    return videos


def _needs_transform(videos: Any) -> bool:
    """Whether some inputs are not clips yet (a dataset transforms its own items)."""
    if not isinstance(videos, list | tuple):
        return False
    return not all(
        isinstance(v, torch.Tensor) or (isinstance(v, np.ndarray) and v.dtype != np.uint8) for v in videos
    )


# columns of a search result; manifest columns of these names are kept as manifest_<name>
RESULT_COLUMNS = ("query", "rank", "score", "row")


@dataclass
class StoredEmbeddings:
    """What :func:`embed_dataset` wrote."""

    out: Any  # pathlib.Path of the folder holding videos/ and reports/
    videos: int  # rows of the video store
    reports: int  # rows of the report store (0: the data set has no reports, and no store)
    skipped: int  # videos that could not be read (listed in skipped.csv)
    dim: int
    studies: StudyEmbeddings | None = None  # embed_study_dataset: what pooling did


def embed_dataset(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    out: str | os.PathLike[str],
    *,
    model_identity: dict[str, str] | None = None,
    dtype: str = "float16",
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> StoredEmbeddings:
    """Embed a data set's videos and distinct reports into two embedding stores, atomically.

    Writes ``out/videos`` (one row per readable video, with every manifest column),
    ``out/reports`` (one row per distinct report of a study; none when the data set has
    no reports) and ``out/skipped.csv``. Video paths are kept relative to the data set's
    root, which both stores record (``video_root``), so that a search result leads back
    to its file wherever the stores are opened. ``model_identity`` (``{"name", "hash"}``,
    from :func:`~echoclip.models.model_dir.model_identity`) lets an index refuse queries
    embedded by another model. Example::

        dataset = open_dataset("runs/sim", "test", VideoTransform(model.preprocess_config))
        embed_dataset(model, tokenizer, dataset, "runs/emb", model_identity=model_identity(model_dir))

    With ``ranks`` of a world of several, this process embeds only the videos and the
    reports of rows ``i ≡ rank (mod world)`` into ``out/parts/rank-XXXXX/`` (the
    returned counts are its own); :func:`merge_embeddings` then writes the stores one
    process would have written. Reports are split like videos: they are cheap next to
    videos, but at a million reports one rank doing them all would keep the others
    waiting at the merge.
    """
    from pathlib import Path

    from echoclip import atomic
    from echoclip.data.datasets import write_skip_report
    from echoclip.retrieval import EmbeddingStore

    ranks = ranks or Ranks()
    out = Path(out)
    _check_out(out, overwrite, ranks)
    all_videos = _video_metadata(dataset)
    report_meta = _report_metadata(dataset.table)
    video_rows = np.asarray(ranks.mine(len(all_videos)), dtype=np.int64)
    report_rows = np.asarray(ranks.mine(len(report_meta)), dtype=np.int64)
    width = int(getattr(getattr(model, "config", None), "embed_dim", 0))
    if len(video_rows) or not ranks.split:  # one process with no videos: encode_videos says so
        videos = dataset if not ranks.split else _Rows(dataset, video_rows)
        encoded = encode_videos(
            model,
            videos,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=progress,
            on_error="drop",
        )
    else:  # a rank of a world larger than the data set
        encoded = Encoded(np.zeros((0, width), np.float32), np.zeros(0, np.int64))
    read_rows = video_rows[encoded.positions]
    video_meta = all_videos.iloc[read_rows].reset_index(drop=True)
    texts = report_meta["report"].iloc[report_rows].tolist()
    reports = embed_reports(model, tokenizer, texts, device=device, progress=progress)
    dim = int(encoded.features.shape[1]) or width
    root = str(Path(dataset.root).resolve())
    target = part_dir(out, ranks.rank) if ranks.split else out
    with atomic.writing_dir(target) as tmp:
        store = EmbeddingStore.create(tmp / "videos", dim, dtype, model=model_identity, video_root=root)
        store.append(encoded.features, video_meta)
        if len(report_meta):
            store = EmbeddingStore.create(tmp / "reports", dim, dtype, model=model_identity, video_root=root)
            store.append(reports, report_meta.iloc[report_rows].reset_index(drop=True))
        if ranks.split:
            np.save(tmp / "video_rows.npy", read_rows, allow_pickle=False)
            np.save(tmp / "report_rows.npy", report_rows, allow_pickle=False)
            atomic.write_json(
                tmp / PART_FILE,
                {
                    "format": PART_FORMAT,
                    "rank": ranks.rank,
                    "world_size": ranks.world_size,
                    "fingerprint": _fingerprint(all_videos, report_meta, model_identity, dtype),
                    "dim": dim,
                    "rows": len(all_videos),
                    "reports": len(report_meta),
                    "skipped": [[r.path, r.reason, r.key] for r in dataset.skipped],
                },
            )
        else:
            write_skip_report(dataset.skipped, tmp / "skipped.csv")
    return StoredEmbeddings(target, len(read_rows), len(report_rows), len(encoded.failed), dim)


def embed_study_dataset(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    out: str | os.PathLike[str],
    *,
    model_identity: dict[str, str] | None = None,
    dtype: str = "float16",
    max_videos: int = DEFAULT_MAX_VIDEOS,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
    videos: str | os.PathLike[str] | None = None,
) -> StoredEmbeddings:
    """Embed a data set's studies (:func:`embed_studies`) and distinct reports into two stores.

    Writes ``out/studies`` (one row per study with a readable video: ``study_id``, every
    manifest column that is the same on all of the study's rows, such as its report, patient,
    split and labels, ``n_videos`` pooled and their ``views``), ``out/reports`` (as
    :func:`embed_dataset`), ``out/skipped.csv`` (unreadable files) and
    ``out/skipped_studies.csv`` (studies with no readable video). ``echoclip index`` turns
    the folder into a study index and a report index. A study without a report text is
    kept (it can be found by its videos) and has no row in ``out/reports``.

    ``videos``: a video store of the same data set by the same model (:func:`embed_dataset`'s
    ``out/videos``), whose embeddings are pooled instead of encoding the videos again; a
    study none of whose videos it holds is listed in ``skipped_studies.csv``, and the
    unreadable files are in that store's ``skipped.csv``, not in this one.
    """
    from pathlib import Path

    import pandas as pd

    from echoclip import atomic
    from echoclip.data.datasets import write_skip_report
    from echoclip.retrieval import EmbeddingStore

    out = Path(out)
    _check_out(out, overwrite, Ranks())
    table = getattr(dataset, "table", None)
    if table is None or "study_id" not in table.columns:
        raise DataError(f"{getattr(dataset, 'root', 'the data set')}: no study_id column to group videos by")
    if videos is None:
        studies = embed_studies(
            model,
            dataset,
            max_videos=max_videos,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=progress,
        )
        not_pooled = "no readable video (see skipped.csv)"
    else:
        studies = _pool_video_store(model, table, Path(videos), model_identity, max_videos, device)
        not_pooled = f"no video in {Path(videos).name}"
    meta = _study_metadata(table, studies)
    report_meta = _report_metadata(table)
    reports = embed_reports(
        model, tokenizer, report_meta["report"].tolist(), device=device, progress=progress
    )
    dim = int(studies.features.shape[1]) or int(getattr(getattr(model, "config", None), "embed_dim", 0))
    root = str(Path(dataset.root).resolve())
    with atomic.writing_dir(out) as tmp:
        store = EmbeddingStore.create(tmp / "studies", dim, dtype, model=model_identity, video_root=root)
        store.append(studies.features, meta)
        if len(report_meta):
            store = EmbeddingStore.create(tmp / "reports", dim, dtype, model=model_identity, video_root=root)
            store.append(reports, report_meta)
        write_skip_report(dataset.skipped, tmp / "skipped.csv")
        skipped = pd.DataFrame(
            {
                "study_id": studies.skipped,
                "videos": [int((table["study_id"] == s).sum()) for s in studies.skipped],
                "reason": not_pooled,
            }
        )
        atomic.write_text(tmp / "skipped_studies.csv", skipped.to_csv(index=False))
    return StoredEmbeddings(out, len(studies), len(report_meta), len(studies.failed), dim, studies)


def _pool_video_store(
    model: Any,
    table: Any,
    path: Any,
    model_identity: dict[str, str] | None,
    max_videos: int,
    device: str | torch.device | None,
) -> StudyEmbeddings:
    """The studies of ``table`` pooled (:func:`pool_studies`) from a store of their videos'
    embeddings; a store of another model, or of videos of other studies, is refused."""
    from echoclip.retrieval import EmbeddingStore

    store = EmbeddingStore(path)
    made_by, wanted = (store.model or {}).get("hash"), (model_identity or {}).get("hash")
    if made_by and wanted and made_by != wanted:
        raise DataError(
            f"{path}: embedded by another model ({(store.model or {}).get('name')}); "
            "embed the videos with this one, or leave the video store out"
        )
    meta = store.metadata()
    if meta is None or "study_id" not in meta.columns:
        raise DataError(f"{path}: its metadata has no study_id column to group videos by")
    known = set(table["study_id"])
    strangers = [s for s in meta["study_id"].drop_duplicates() if s not in known]
    if strangers:
        raise DataError(f"{path}: holds videos of {len(strangers)} studies this data set does not have")
    study_ids = meta["study_id"].tolist()
    pooled = pool_studies(
        model, store.embeddings(), study_ids, table_views(meta), max_videos=max_videos, device=device
    )
    stored = set(study_ids)
    pooled.skipped = [s for s in table["study_id"].drop_duplicates() if s not in stored]
    return pooled


def _study_metadata(table: Any, studies: StudyEmbeddings) -> Any:
    """One row per pooled study: ``study_id``, the columns constant within every study, the
    number of videos pooled and their views (``;``-joined, ``?`` unknown)."""
    per_video = {"video_path", "view", "view_pred", *RESULT_COLUMNS}
    grouped = table.groupby("study_id", sort=False)
    constant = [
        c
        for c in table.columns
        if c not in per_video and c != "study_id" and bool((grouped[c].nunique(dropna=False) <= 1).all())
    ]
    first = table.drop_duplicates("study_id").set_index("study_id")
    meta = first.loc[list(studies.study_ids), constant].reset_index()
    meta["n_videos"] = [len(r) for r in studies.rows]
    meta["views"] = [";".join("?" if v is None else str(v) for v in vs) for vs in studies.views]
    return meta


PART_FILE = "part.json"  # written last in a rank's part folder, with the rows it holds beside it
PART_FORMAT = "echoclip-embedding-part"


def merge_embeddings(out: str | os.PathLike[str]) -> StoredEmbeddings:
    """Join the ranks' parts (``out/parts/rank-*``) into ``out/videos``, ``out/reports`` and
    ``out/skipped.csv``: rows sorted by their data set row, as one process writes them.

    The whole of ``out`` is replaced at once (the parts go with it), so a merge that
    dies leaves the parts to merge again.

    Raises:
        RetrievalError: no parts, parts of different runs or world sizes, a rank missing.
    """
    from pathlib import Path

    import pandas as pd

    from echoclip import atomic
    from echoclip.data.datasets import SkipRecord, write_skip_report
    from echoclip.retrieval import EmbeddingStore, RetrievalError

    out = Path(out)
    files = sorted((out / PARTS).glob(f"rank-*/{PART_FILE}"))
    if not files:
        raise RetrievalError(f"{out}: no rank parts to merge ({PARTS}/rank-*/{PART_FILE})")
    parts: dict[int, dict[str, Any]] = {}
    for file in files:
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise RetrievalError(f"{file}: not valid JSON ({e})") from None
        if info.get("format") != PART_FORMAT:
            raise RetrievalError(f"{file}: not a part written by embed_dataset")
        parts[rank_of_part(file.parent)] = info
    first = check_parts(
        out,
        parts,
        ("world_size", "fingerprint", "dim"),
        PART_FILE,
        "another data set, model, dtype or world size",
        RetrievalError,
    )

    def gather(kind: str) -> tuple[np.ndarray, pd.DataFrame | None, EmbeddingStore | None]:
        chunks, metas, rows, store = [], [], [], None
        for rank in sorted(parts):
            folder = part_dir(out, rank)
            if not (folder / kind / "store.json").is_file():
                continue
            store = EmbeddingStore(folder / kind)
            if len(store):
                chunks.append(store.embeddings())
                metas.append(store.metadata())
                rows.append(np.load(folder / f"{kind[:-1]}_rows.npy", allow_pickle=False))
        if not chunks:
            return np.zeros((0, int(first["dim"])), np.float32), None, store
        order = np.argsort(np.concatenate(rows), kind="stable")
        meta = pd.concat(metas, ignore_index=True).iloc[order].reset_index(drop=True)
        return np.concatenate(chunks)[order], meta, store

    videos, video_meta, like = gather("videos")
    reports, report_meta, _ = gather("reports")
    if like is None:
        raise RetrievalError(f"{out}: the parts hold no video store")
    records = {tuple(r)[2] or tuple(r)[0]: SkipRecord(*r) for info in parts.values() for r in info["skipped"]}
    skipped = sorted(records.values(), key=lambda r: (r.path, r.key))
    with atomic.writing_dir(out) as tmp:
        for kind, emb, meta in (("videos", videos, video_meta), ("reports", reports, report_meta)):
            if kind == "reports" and not first["reports"]:
                continue  # a data set without reports has no report store, as with one process
            store = EmbeddingStore.create(
                tmp / kind, like.dim, like.dtype, model=like.model, video_root=like.video_root
            )
            if meta is not None:
                store.append(emb, meta)
        write_skip_report(skipped, tmp / "skipped.csv")
    return StoredEmbeddings(out, len(videos), len(reports), len(skipped), like.dim)


class _Rows(torch.utils.data.Dataset):
    """The rows ``rows`` of a dataset, as a dataset of their own (a rank's share)."""

    def __init__(self, dataset: Any, rows: np.ndarray) -> None:
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.rows[i])]


def _check_out(out: Any, overwrite: bool, ranks: Ranks) -> None:
    """Refuse to replace embeddings unasked, or a folder that holds something else.

    A rank's folder may already hold other ranks' parts (they started first)."""
    from echoclip.retrieval import RetrievalError

    if not out.exists() or not any(out.iterdir()):
        return
    final = any((out / n / "store.json").is_file() for n in ("videos", "reports", "studies"))
    if final and not overwrite:
        raise RetrievalError(f"{out}: already exists; pass overwrite=True (--overwrite) to replace it")
    if not final and not (ranks.split and (out / PARTS).is_dir()):
        raise RetrievalError(f"{out}: exists and holds no embeddings; refusing to replace it")


def _fingerprint(videos: Any, reports: Any, identity: dict[str, str] | None, dtype: str) -> str:
    """What every rank of one run agrees on: the data set's rows, the model and the dtype."""
    import hashlib

    h = hashlib.sha256(json.dumps([identity, dtype, len(videos), len(reports)], sort_keys=True).encode())
    for path in videos["video_path"]:
        h.update(f"{path}\n".encode())
    for study, text in zip(reports.get("study_id", []), reports.get("report", []), strict=False):
        h.update(f"{study}\x00{text}\n".encode())
    return h.hexdigest()


def _video_metadata(dataset: Any) -> Any:
    """One row per video: every manifest column, ``video_path`` relative to the data set's root."""
    from pathlib import Path

    table = dataset.table.copy()
    root = Path(dataset.root).resolve()
    paths = []
    for i in range(len(table)):
        path = Path(dataset.video_path(i)).resolve()
        paths.append(str(path.relative_to(root)) if path.is_relative_to(root) else str(path))
    table["video_path"] = paths
    return table.rename(columns={c: f"manifest_{c}" for c in table.columns if c in RESULT_COLUMNS})


def _report_metadata(table: Any) -> Any:
    """One row per distinct (study, report); empty reports (EchoNet-Dynamic has none) dropped."""
    keep = [c for c in ("study_id", "patient_id", "report", "split") if c in table.columns]
    if "report" not in table.columns:
        return table.iloc[:0][keep].assign(report=[])
    reports = table.loc[table["report"].astype(str).str.strip() != "", keep]
    return reports.drop_duplicates(subset=["study_id", "report"]).reset_index(drop=True)
