"""Datasets of echo clips: a generic manifest, the EchoNet-Dynamic layout, and :func:`open_dataset`.

The public data sets in their own layouts (EchoNet-Pediatric, EchoNet-LVH, CAMUS, TMED-2)
are in :mod:`echoclip.data.public_datasets`; :func:`open_dataset` recognises them all.

All are map-style ``torch`` datasets whose items are dicts::

    {"video": float [3,T,H,W], "report": str, "study_id": str, "patient_id": str,
     "ef": float (nan if unknown), "labels": {name: float}, "index": int,
     "cm_per_px": float [2] (the clip's cm per pixel, x and y; nan if unknown), "period": float}

Only the frames of the clip are decoded (the transform's :class:`ClipSampler` says
which). A file that cannot be read does not stop a run: its item is ``None``,
:func:`collate_skip` drops it, and ``dataset.skipped`` records the file and the
reason - also for files read in DataLoader worker processes - so the run can end
with :func:`write_skip_report` (a logged table and ``skipped.csv``). Files are named
there, in logs and in errors relative to the dataset's root, with path components
that hold the file's identifying header values replaced
(:func:`echoclip.data.deid.shown_path`): hospital exports name folders after patients.

Randomness (clip start, augmentation) comes from ``(seed, epoch, index)``; call
``set_epoch`` at the start of each epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from echoclip import atomic
from echoclip.data.augment import sample_rng
from echoclip.data.cardiac import estimate_period, period_from_heart_rate
from echoclip.data.deid import hash_uid, read_failure, shown_path
from echoclip.data.scale import scale_tensor, table_scales
from echoclip.data.transforms import (
    ClipSampler,
    PreprocessConfig,
    VideoTransform,
)
from echoclip.data.video import Video, load_video
from echoclip.errors import DataError, VideoReadError
from echoclip.registry import Registry

__all__ = [
    "Manifest",
    "EchoNetDynamic",
    "collate_skip",
    "SkipRecord",
    "SkipLog",
    "write_skip_report",
    "MANIFEST_REQUIRED_COLUMNS",
    "open_dataset",
    "register_layout",
    "known_layouts",
    "DataLayout",
    "DATA_LAYOUTS",
]

log = logging.getLogger(__name__)

MANIFEST_REQUIRED_COLUMNS: tuple[str, ...] = ("video_path", "report", "patient_id", "study_id")
_NUMERIC_LABELS: tuple[str, ...] = ("ef", "edv", "esv", "heart_rate")
_LABEL_PREFIXES: tuple[str, ...] = ("device_", "finding_")

# ---------------------------------------------------------------------------------------
# skipped files


@dataclass(frozen=True)
class SkipRecord:
    """A file a dataset could not read, and why.

    ``path`` is the file as shown (see :func:`~echoclip.data.deid.shown_path`); ``key``,
    a salted hash of the real path, tells apart two files shown alike (two patients'
    ``[patient]/IM0001.dcm``) without keeping the real path.
    """

    path: str
    reason: str
    key: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class SkipLog(Sequence[SkipRecord]):
    """The files a dataset skipped, one record per file, in every process that read some.

    DataLoader workers are separate processes: a record made there is appended to a
    small spool folder that the owning process reads back, so ``len(dataset.skipped)``
    counts every skipped file however many workers there were.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._owner = os.getpid()
        self._local: dict[str, SkipRecord] = {}
        self._seen_here: set[str] = set()
        self._spool = Path(tempfile.gettempdir()) / f"echoclip-skipped-{uuid.uuid4().hex}"
        weakref.finalize(self, _remove_spool, self._spool, self._owner)

    def add(self, path: str | os.PathLike[str], reason: str | BaseException) -> bool:
        """Record a skipped file, and log it; True the first time this process records it.

        ``reason`` is the reader's error (best: its parts name the file without patient
        data) or the cause as text. The record names the file relative to ``root``.
        """
        key = _path_key(path)
        if key in self._seen_here:
            return False
        self._seen_here.add(key)
        if isinstance(reason, BaseException):
            shown, text = read_failure(path, reason, self.root)
        else:
            shown, text = shown_path(path, self.root), reason
        record = SkipRecord(shown, text, key)
        log.warning("skipping %s", record)
        if os.getpid() == self._owner:
            self._local[key] = record
            return True
        self._spool.mkdir(parents=True, exist_ok=True)
        with open(self._spool / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps([record.path, record.reason, record.key]) + "\n")
        return True

    def get(self, path: str | os.PathLike[str]) -> SkipRecord | None:
        """The record of ``path`` (the real path, as read), or None if it was not skipped."""
        key = _path_key(path)
        return next((r for r in self._records() if r.key == key), None)

    def _records(self) -> list[SkipRecord]:
        records = dict(self._local)
        if self._spool.is_dir():
            for part in sorted(self._spool.glob("*.jsonl")):
                for line in part.read_text(encoding="utf-8").splitlines():
                    try:
                        shown, reason, key = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a killed worker
                    records.setdefault(key, SkipRecord(shown, reason, key))
        return sorted(records.values(), key=lambda r: (r.path, r.key))

    def __len__(self) -> int:
        return len(self._records())

    def __getitem__(self, i: int) -> SkipRecord:  # type: ignore[override]
        return self._records()[i]

    def __iter__(self) -> Iterator[SkipRecord]:
        return iter(self._records())

    def __repr__(self) -> str:
        return f"SkipLog({len(self)} files)"

    def report(self, out_dir: str | os.PathLike[str]) -> Path:
        """Log the table of skipped files and write ``out_dir/skipped.csv``."""
        return write_skip_report(self, Path(out_dir) / "skipped.csv")


def _path_key(path: str | os.PathLike[str]) -> str:
    return hash_uid(os.path.abspath(path))


def _remove_spool(spool: Path, owner: int) -> None:
    if os.getpid() != owner or not spool.is_dir():
        return
    for part in spool.glob("*"):
        part.unlink(missing_ok=True)
    spool.rmdir()


def write_skip_report(skipped: Iterable[SkipRecord | tuple[str, ...]], path: str | os.PathLike[str]) -> Path:
    """Write the skipped files as CSV (``file,reason``) atomically and log them as a table.

    The file is written even when nothing was skipped, so a run's outputs always say so.
    Records name files as the datasets showed them (see :class:`SkipRecord`).
    """
    records = [r if isinstance(r, SkipRecord) else SkipRecord(*map(str, r)) for r in skipped]
    records = list({r.key or r.path: r for r in records}.values())
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "reason"])
    writer.writerows([r.path, r.reason] for r in records)
    atomic.write_text(path, buf.getvalue())
    if records:
        log.warning(
            "skipped %d unreadable files (listed in %s):\n%s", len(records), path, format_skip_table(records)
        )
    else:
        log.info("no files skipped")
    return path


def format_skip_table(records: Sequence[SkipRecord]) -> str:
    """A plain-text table of skipped files and reasons."""
    width = min(max([len("file")] + [len(r.path) for r in records]), 80)
    lines = [f"{'file':<{width}}  reason", f"{'-' * width}  {'-' * 6}"]
    lines += [f"{r.path:<{width}}  {r.reason}" for r in records]
    return "\n".join(lines)


def collate_skip(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``default_collate`` of the samples that loaded; ``None`` if none did.

    Use as ``DataLoader(dataset, collate_fn=collate_skip)``; the dataset's ``skipped``
    says which files were dropped and why.
    """
    from torch.utils.data import default_collate

    good = [b for b in batch if b is not None]
    return default_collate(good) if good else None


# ---------------------------------------------------------------------------------------
# datasets


class ClipDataset(Dataset):
    """What :class:`Manifest`, :class:`EchoNetDynamic` and the public data sets
    (:mod:`echoclip.data.public_datasets`) share: a table of videos -> clips.

    Subclasses set ``self.table`` (one row per video, with ``video_path``) and
    implement :meth:`_item`.
    """

    table: Any  # pandas.DataFrame

    def __init__(
        self,
        root: Path,
        transform: Callable[..., Any] | None,
        clip: ClipSampler | None,
        seed: int | None,
        read_options: dict[str, Any] | None,
    ) -> None:
        self.root = root
        self.transform = transform if transform is not None else VideoTransform(PreprocessConfig())
        self.sampler = clip or getattr(self.transform, "sampler", None) or ClipSampler()
        self.seed = int(seed if seed is not None else getattr(self.transform, "seed", 0))
        self.read_options = dict(read_options or {})
        self._preloaded: dict[str, Any] = {}
        self._periods: dict[str, float] = {}  # path -> cardiac period of the whole video, in its frames
        # estimate the period of videos without a heart rate on the whole video, once per file
        # (a full decode); objectives that use the period (pretraining) set it
        self.needs_period = False
        self.epoch = 0
        self.skipped = SkipLog(root)
        has_rate = "heart_rate" in self.table.columns
        self._heart_rates = _float_columns(self.table, ["heart_rate"])[:, 0] if has_rate else None
        # per-row centimetres per pixel from the table (cm_per_px or cm_per_px_x/_y), else the file's
        self._scales = table_scales(self.table)

    def set_epoch(self, epoch: int) -> None:
        """Use the randomness of ``epoch`` (clip starts, augmentation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.table)

    def video_path(self, index: int) -> Path:
        path = Path(str(self.table["video_path"].iat[index]))
        return path if path.is_absolute() else self.root / path

    def file_options(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The keyword arguments of :func:`~echoclip.data.video.load_video` for ``path``.

        Here the dataset's ``read_options``; a data set whose tables record what its files
        do not (CAMUS keeps each cine's frame rate beside it, not in it) adds that per file.
        """
        return dict(self.read_options)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} videos")
        rng = sample_rng(self.seed, self.epoch, index)
        path = self.video_path(index)
        try:
            heart_rate = None if self._heart_rates is None else float(self._heart_rates[index])
            frames, period, scale = self.read_clip(path, rng, heart_rate)
        except VideoReadError as e:
            self.skipped.add(path, e)
            return None
        if str(path) not in self._preloaded:  # preloading applied the table's scale already
            scale = self.scale_of(index, scale)
        return self._item_from_clip(index, frames, period, scale, rng)

    def item_from_video(
        self, index: int, video: Video, rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """The item of row ``index`` cut from ``video``, a decoded (and perhaps altered) copy of
        its file: the clip the sampler picks, transformed as :meth:`__getitem__` transforms it.

        For callers that change a video between decoding and sampling (the acquisition
        perturbations of :mod:`echoclip.data.perturb`); an unaltered video gives the item
        :meth:`__getitem__` gives. The cardiac period comes from the heart rate (the
        table's, else the file's), else, when cycle sampling or :attr:`needs_period` asks
        for it, from ``video`` itself (not remembered: the video may differ from the file).
        """
        rng = sample_rng(self.seed, self.epoch, index) if rng is None else rng
        rate = None if self._heart_rates is None else float(self._heart_rates[index])
        rate = rate if rate is not None and np.isfinite(rate) and rate > 0 else video.meta.get("heart_rate")
        sampler = self.sampler
        if rate:
            period = period_from_heart_rate(float(rate), video.fps)
        elif sampler.cycle or self.needs_period:
            period = estimate_period(video.frames)
        else:
            period = math.nan
        frames, period = self._cut_clip(video, period, rng)
        return self._item_from_clip(
            index, frames, period, self.scale_of(index, video.meta.get("cm_per_px")), rng
        )

    def _cut_clip(self, video: Video, period: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """The sampler's clip of a whole decoded video and its period in clip frames; a cycle
        sampler whose period is unknown takes a plain clip."""
        sampler = self.sampler
        if sampler.cycle and not math.isfinite(period):
            sampler = replace(sampler, cycle=False)
        cycle = period if sampler.cycle else None
        idx = sampler.indices(video.num_frames, video.fps, rng, cycle)
        return video.frames[idx], period / sampler.step(video.fps, cycle)

    def _item_from_clip(
        self, index: int, frames: np.ndarray, period: float, scale: Any, rng: np.random.Generator
    ) -> dict[str, Any]:
        """The item of row ``index`` from its clip's frames, period and file scale."""
        if isinstance(self.transform, VideoTransform):
            video, scale = self.transform.scaled(frames, rng, cm_per_px=scale)
        else:
            video, scale = self.transform(frames), scale_tensor(None)
        return {**self._item(index, video), "period": period, "cm_per_px": scale}

    def preload(self, progress: bool = True, cache: dict[str, Any] | None = None) -> None:
        """Decode every video once and keep it in memory; clips are then cut from memory.

        For small data sets trained for many epochs in one process (the demo), this
        replaces thousands of decodes by one per video. Unreadable videos are recorded
        in :attr:`skipped` now and skipped later as usual. Workers of a DataLoader get
        a copy of the cache, so preload before creating it.

        With a :class:`VideoTransform`, frames are kept at its ``image_size`` (resized
        and centre-cropped once, as preprocessed shards store them): resizing 112 px
        frames to 64 px took half of each training item's time when done per epoch.

        ``cache`` (a dict, path -> decoded video) becomes this dataset's store: datasets
        of the same ``image_size`` that share one decode each video once between them
        (the demo's pretraining, two CLIP runs and probes read the same videos); a cache
        holding frames of another size is refused with a ValueError.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        transform = self.transform if isinstance(self.transform, VideoTransform) else None
        geometry = None if transform is None else (transform.config.image_size, transform.config.field_cm)
        if cache is not None:
            held = next(iter(cache.values()), None)
            if held is not None and geometry is not None and held.meta.get("geometry") != geometry:
                raise ValueError(
                    f"the shared video cache holds frames of size and field {held.meta.get('geometry')}; "
                    f"this dataset's transform needs {geometry}: share a cache only between datasets "
                    "of the same image size and field of view"
                )
            self._preloaded = cache
        scales = {str(self.video_path(i)): s for i, s in enumerate(self._scales or []) if s is not None}
        paths = list(dict.fromkeys(str(self.video_path(i)) for i in range(len(self))))
        paths = [p for p in paths if p not in self._preloaded]

        def decode(path: str) -> tuple[str, Any]:
            try:
                video = load_video(path, **self.file_options(path))
            except VideoReadError as e:
                return path, e
            if transform is not None:
                frames, scale = transform.resized(video.frames, scales.get(path, video.meta.get("cm_per_px")))
                video = Video(frames, video.fps, {**video.meta, "cm_per_px": scale, "geometry": geometry})
            return path, video

        # the decoder releases the GIL: threads decode in parallel
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            results = pool.map(decode, paths)
            for path, result in tqdm(
                results, total=len(paths), desc="decode", unit="video", disable=not progress
            ):
                if isinstance(result, VideoReadError):
                    self.skipped.add(path, result)
                else:
                    self._preloaded[path] = result

    def read_clip(
        self, path: Path, rng: np.random.Generator, heart_rate: float | None = None
    ) -> tuple[np.ndarray, float, Any]:
        """The clip's frames ``uint8 [T,H,W,3]``, its cardiac period in clip frames (``nan``:
        unknown) and the file's centimetres per pixel (``None``: unknown).

        Only the clip's frames are decoded, unless a whole cycle must be found or the
        period must be estimated on the whole video (once per file, when
        :attr:`needs_period` is set). The period comes from the table's heart rate, else
        the file's (DICOM HeartRate), else the whole video: a clip may hold less than the
        beat and a half an estimate needs.
        """
        sampler = self.sampler
        if heart_rate is not None and not (np.isfinite(heart_rate) and heart_rate > 0):
            heart_rate = None
        cached = self._preloaded.get(str(path))
        if cached is not None and not sampler.cycle:
            period = self._source_period(path, cached, heart_rate, whole=self.needs_period)
            idx = sampler.indices(cached.num_frames, cached.fps, rng)
            return cached.frames[idx], period / sampler.step(cached.fps), cached.meta.get("cm_per_px")
        skipped = self.skipped.get(path) if self._preloaded and cached is None else None
        if skipped is not None:
            raise VideoReadError(str(skipped), path=PurePath(skipped.path), reason=skipped.reason)
        whole = sampler.cycle and heart_rate is None  # a cycle of unknown length: measure it
        whole = whole or (self.needs_period and heart_rate is None and str(path) not in self._periods)
        if not whole:
            seen: dict[str, float] = {}

            def select(total: int, fps: float) -> np.ndarray:
                seen["fps"] = fps
                cycle = period_from_heart_rate(heart_rate, fps) if sampler.cycle and heart_rate else None
                return sampler.indices(total, fps, rng, cycle)

            video = load_video(path, indices=select, **self.file_options(path))
            period = self._source_period(path, video, heart_rate, whole=False, fps=seen["fps"])
            step = sampler.step(seen["fps"], period if sampler.cycle else None)
            return video.frames, period / step, video.meta.get("cm_per_px")
        video = load_video(path, **self.file_options(path))
        period = self._source_period(path, video, heart_rate, whole=True)
        if sampler.cycle and not math.isfinite(period):
            log.info("%s: no cardiac cycle found; sampling a plain clip", shown_path(path, self.root))
        frames, period = self._cut_clip(video, period, rng)
        return frames, period, video.meta.get("cm_per_px")

    def scale_of(self, index: int, file_scale: Any) -> Any:
        """The centimetres per pixel of row ``index``: the table's, else the file's (``None``: unknown)."""
        if self._scales is not None and self._scales[index] is not None:
            return self._scales[index]
        return file_scale

    def _source_period(
        self, path: Path, video: Video, heart_rate: float | None, whole: bool, fps: float | None = None
    ) -> float:
        """The cardiac period in the file's frames: the table's heart rate, the header's, or an
        estimate on the whole video (remembered per file); ``nan`` when none is known."""
        fps = video.fps if fps is None else fps
        rate = heart_rate or video.meta.get("heart_rate")
        if rate:
            return period_from_heart_rate(float(rate), fps)
        key = str(path)
        if whole and key not in self._periods:
            self._periods[key] = estimate_period(video.frames)
        return self._periods.get(key, math.nan)

    def _item(self, index: int, video: Any) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} videos, root={self.root}, skipped={len(self.skipped)})"


class Manifest(ClipDataset):
    """Videos listed in a parquet or CSV manifest, with their reports and labels.

    Required columns: ``video_path`` (absolute, or relative to the manifest's folder
    or ``root``), ``report``, ``patient_id``, ``study_id``. Optional: ``view``,
    ``split``, ``ef``, ``edv``, ``esv``, ``heart_rate`` (used by cycle sampling), and
    label columns ``device_*`` / ``finding_*``.

    Example::

        ds = Manifest("runs/sim/manifest.parquet", split="train", transform=VideoTransform(cfg))
        loader = DataLoader(ds, batch_size=8, collate_fn=collate_skip, num_workers=2)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str | Sequence[str] | None = None,
        transform: Callable[..., Any] | None = None,
        *,
        clip: ClipSampler | None = None,
        seed: int | None = None,
        root: str | os.PathLike[str] | None = None,
        label_columns: Sequence[str] | None = None,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        path = Path(path)
        table = read_table(path)
        missing = [c for c in MANIFEST_REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(
                f"{path}: manifest lacks required columns {missing}; it has {sorted(map(str, table.columns))}"
            )
        table = _select_split(table, split, path)
        for col in ("video_path", "patient_id", "study_id"):
            table[col] = table[col].astype(str)
        table["report"] = table["report"].fillna("").astype(str)
        if label_columns is None:
            label_columns = [c for c in _NUMERIC_LABELS if c in table.columns] + sorted(
                c for c in table.columns if str(c).startswith(_LABEL_PREFIXES)
            )
        absent = [c for c in label_columns if c not in table.columns]
        if absent:
            raise DataError(f"{path}: label columns {absent} are not in the manifest")
        self.path = path
        self.label_columns = list(label_columns)
        self.table = table.reset_index(drop=True)
        self._labels = _float_columns(self.table, self.label_columns)
        self._ef = _float_columns(self.table, ["ef"])[:, 0] if "ef" in table.columns else None
        super().__init__(Path(root) if root is not None else path.parent, transform, clip, seed, read_options)

    def _item(self, index: int, video: Any) -> dict[str, Any]:
        row = self.table.iloc[index]
        return {
            "video": video,
            "report": row["report"],
            "study_id": row["study_id"],
            "patient_id": row["patient_id"],
            "ef": float(self._ef[index]) if self._ef is not None else float("nan"),
            "labels": {c: float(self._labels[index, j]) for j, c in enumerate(self.label_columns)},
            "index": index,
        }


class EchoNetDynamic(ClipDataset):
    """The EchoNet-Dynamic layout: ``FileList.csv``, ``VolumeTracings.csv``, ``Videos/*.avi``.

    Items carry EF, ESV and EDV from ``FileList.csv`` (as ``ef`` and ``labels``) and an
    empty report. With ``tracings=True`` they also carry the LV masks traced at end
    diastole and end systole (``lv_mask_ed``, ``lv_mask_es``: bool ``[H,W]`` in source
    pixels) and their frame numbers (``ed_frame``, ``es_frame``; -1 and empty masks
    for a video without tracings). Of the two traced frames, the larger LV is ED.

    Args:
        root: the folder holding ``FileList.csv``.
        split: ``"train"``, ``"val"``, ``"test"`` (the ``Split`` column) or ``"all"``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | Sequence[str] | None = "train",
        transform: Callable[..., Any] | None = None,
        *,
        clip: ClipSampler | None = None,
        seed: int | None = None,
        tracings: bool = False,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        import pandas as pd

        root = Path(root)
        filelist = root / "FileList.csv"
        if not filelist.is_file():
            raise DataError(f"{root}: not an EchoNet-Dynamic folder (no FileList.csv)")
        table = pd.read_csv(filelist, dtype={"FileName": str})
        missing = [c for c in ("FileName", "EF", "ESV", "EDV", "Split") if c not in table.columns]
        if missing:
            hint = ""
            if {"Age", "Weight", "Height"} <= set(table.columns):  # one view folder of EchoNet-Pediatric
                hint = "; this looks like a view folder of EchoNet-Pediatric: give the folder holding A4C/ and PSAX/"
            raise DataError(f"{filelist}: lacks columns {missing}; it has {sorted(table.columns)}{hint}")
        table = table.rename(columns={"Split": "split"})
        if split is not None and not (isinstance(split, str) and split.lower() == "all"):
            table = _select_split(table, split, filelist)
        names = table["FileName"].astype(str)
        stems = names.str.replace(r"\.avi$", "", regex=True, case=False)
        self.table = pd.DataFrame(
            {
                "video_path": "Videos/" + stems + ".avi",
                "report": "",
                "study_id": stems,
                "patient_id": stems,
                "ef": pd.to_numeric(table["EF"], errors="coerce"),
                "esv": pd.to_numeric(table["ESV"], errors="coerce"),
                "edv": pd.to_numeric(table["EDV"], errors="coerce"),
                "split": table["split"].astype(str).str.lower(),
                "height": pd.to_numeric(table.get("FrameHeight", 112), errors="coerce"),
                "width": pd.to_numeric(table.get("FrameWidth", 112), errors="coerce"),
            }
        ).reset_index(drop=True)
        self.tracings = _read_tracings(root / "VolumeTracings.csv") if tracings else None
        super().__init__(root, transform, clip, seed, read_options)

    def _item(self, index: int, video: Any) -> dict[str, Any]:
        row = self.table.iloc[index]
        labels = {k: float(row[k]) for k in ("ef", "esv", "edv")}
        item = {
            "video": video,
            "report": "",
            "study_id": row["study_id"],
            "patient_id": row["patient_id"],
            "ef": labels["ef"],
            "labels": labels,
            "index": index,
        }
        if self.tracings is not None:
            item.update(self.lv_masks(index))
        return item

    def lv_masks(self, index: int) -> dict[str, Any]:
        """``ed_frame``, ``es_frame``, ``lv_mask_ed``, ``lv_mask_es`` of video ``index``."""
        import torch

        row = self.table.iloc[index]
        h = int(row["height"]) if np.isfinite(row["height"]) else 112
        w = int(row["width"]) if np.isfinite(row["width"]) else 112
        traces = (self.tracings or {}).get(row["study_id"], {})
        masks = {frame: _trace_mask(lines, h, w) for frame, lines in traces.items()}
        if len(masks) < 2:
            empty = torch.zeros(h, w, dtype=torch.bool)
            return {"ed_frame": -1, "es_frame": -1, "lv_mask_ed": empty, "lv_mask_es": empty.clone()}
        ordered = sorted(masks, key=lambda f: masks[f].sum())
        es, ed = ordered[0], ordered[-1]
        return {
            "ed_frame": int(ed),
            "es_frame": int(es),
            "lv_mask_ed": torch.from_numpy(masks[ed]),
            "lv_mask_es": torch.from_numpy(masks[es]),
        }


# ---------------------------------------------------------------------------------------
# tables


def read_table(path: Path) -> Any:
    """A parquet or CSV manifest as a DataFrame (ids read as text)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    text_columns = {c: str for c in ("video_path", "patient_id", "study_id", "report", "view", "split")}
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=text_columns)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the manifest ({e})") from None
    raise DataError(f"{path}: a manifest must be .parquet or .csv, not {suffix or 'no extension'}")


def _select_split(table: Any, split: str | Sequence[str] | None, path: Path) -> Any:
    if split is None:
        return table
    if "split" not in table.columns:
        raise DataError(f"{path}: split {split!r} requested but the table has no split column")
    wanted = {split.lower()} if isinstance(split, str) else {s.lower() for s in split}
    values = table["split"].astype(str).str.lower()
    known = set(values.unique())
    unknown = wanted - known
    if unknown == wanted:
        raise DataError(f"{path}: no rows in split {sorted(wanted)}; splits present: {sorted(known)}")
    return table[values.isin(wanted)].copy()


def _float_columns(table: Any, columns: Sequence[str]) -> np.ndarray:
    import pandas as pd

    out = np.full((len(table), len(columns)), np.nan, dtype=np.float64)
    for j, c in enumerate(columns):
        col = table[c]
        if col.dtype == bool:
            out[:, j] = col.to_numpy(dtype=np.float64)
        else:
            out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    return out


def _read_tracings(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """VolumeTracings.csv as {video stem: {frame: [K,4] X1,Y1,X2,Y2 rows}}."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: tracings requested but the file does not exist")
    table = pd.read_csv(path, dtype={"FileName": str})
    missing = [c for c in ("FileName", "X1", "Y1", "X2", "Y2", "Frame") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: lacks columns {missing}")
    table["stem"] = table["FileName"].str.replace(r"\.avi$", "", regex=True, case=False)
    out: dict[str, dict[int, np.ndarray]] = {}
    for (stem, frame), rows in table.groupby(["stem", "Frame"], sort=False):
        out.setdefault(str(stem), {})[int(frame)] = rows[["X1", "Y1", "X2", "Y2"]].to_numpy(dtype=np.float64)
    return out


def _trace_mask(lines: np.ndarray, height: int, width: int) -> np.ndarray:
    """The LV mask of one traced frame, as the EchoNet-Dynamic code builds it.

    The first row is the long axis; the others are chords across the LV whose two
    ends walk down either wall. The polygon goes down one wall and back up the other.
    """
    from matplotlib.path import Path as PolygonPath

    chords = lines[1:] if len(lines) > 2 else lines
    xs = np.concatenate([chords[:, 0], chords[::-1, 2]])
    ys = np.concatenate([chords[:, 1], chords[::-1, 3]])
    polygon = PolygonPath(np.stack([xs, ys], axis=1))
    rr, cc = np.mgrid[0:height, 0:width]
    inside = polygon.contains_points(np.stack([cc.ravel(), rr.ravel()], axis=1))
    return inside.reshape(height, width)


# ---------------------------------------------------------------------------------------
# layouts: the folders open_dataset recognises


@dataclass(frozen=True)
class DataLayout:
    """A data set's folder layout: how to recognise it by its files, and how to open it.

    ``open(path, split, transform, read_options)`` returns the dataset (``split=None``:
    every row); ``describe`` names the files that make the layout, for messages.
    """

    name: str
    matches: Callable[[Path], bool]
    describe: str
    open: Callable[[Path, Any, Any, dict[str, Any] | None], Any]


DATA_LAYOUTS: Registry[DataLayout] = Registry("data set layout", DataError)


def register_layout(
    name: str, matches: Callable[[Path], bool], describe: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an opener of the folders ``matches(folder)`` recognises, for :func:`open_dataset`.

    ``matches`` must look at files only (cheap ``stat`` calls), never at the folder's name.
    Example::

        @register_layout("MyEcho", lambda p: (p / "studies.json").is_file(), "studies.json, clips/")
        def open_my_echo(path, split, transform, read_options):
            return MyEcho(path, split or "all", transform, read_options=read_options)
    """

    def decorator(opener: Callable[..., Any]) -> Callable[..., Any]:
        DATA_LAYOUTS[name] = DataLayout(name, matches, describe, opener)
        return opener

    return decorator


@register_layout("EchoNet-Dynamic", lambda p: (p / "FileList.csv").is_file(), "FileList.csv, Videos/")
def _open_echonet(path: Path, split: Any, transform: Any, read_options: dict[str, Any] | None) -> Any:
    return EchoNetDynamic(path, split=split or "all", transform=transform, read_options=read_options)


def _ensure_builtin_layouts() -> None:
    # the public data sets register their layouts when their module is imported
    import echoclip.data.public_datasets  # noqa: F401


def known_layouts() -> list[str]:
    """What :func:`open_dataset` recognises in a folder, one line each."""
    _ensure_builtin_layouts()
    return ["manifest (manifest.parquet or manifest.csv)"] + [
        f"{layout.name} ({layout.describe})" for layout in DATA_LAYOUTS.values()
    ]


def open_dataset(
    path: str | os.PathLike[str],
    split: str | Sequence[str] | None,
    transform: Any = None,
    *,
    read_options: dict[str, Any] | None = None,
) -> Any:
    """The dataset of one split of a manifest, or of a folder in a layout it recognises
    (``split=None``: every row). What every command's ``--data`` means.

    A folder holding ``manifest.parquet`` is that manifest. Otherwise the folder's files
    say which data set it is (:func:`known_layouts`: EchoNet-Dynamic, EchoNet-Pediatric,
    EchoNet-LVH, CAMUS, TMED-2, and any layout registered with :func:`register_layout`);
    a folder in none of them but with ``manifest.csv`` is that manifest. A folder in no
    layout, or in two, is a :class:`DataError` that says so.

    ``read_options`` go to :func:`~echoclip.data.video.load_video` for every file
    (``{"fps": 30}``: the frame rate of files that record none; ``--fps`` on the command line).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.parquet").is_file():
            return Manifest(
                path / "manifest.parquet", split=split, transform=transform, read_options=read_options
            )
        _ensure_builtin_layouts()
        matched = [layout for layout in DATA_LAYOUTS.values() if layout.matches(path)]
        if len(matched) > 1:
            raise DataError(
                f"{path}: the folder matches several data set layouts ({', '.join(m.name for m in matched)}); "
                "give the folder of one data set, or a manifest"
            )
        if matched:
            return matched[0].open(path, split, transform, read_options)
        if not (path / "manifest.csv").is_file():
            raise DataError(
                f"{path}: no data set in this folder; known layouts: {'; '.join(known_layouts())}"
            )
        path = path / "manifest.csv"
    elif not path.is_file():
        raise DataError(f"{path}: data not found (no such manifest or folder)")
    return Manifest(path, split=split, transform=transform, read_options=read_options)


class VideoClips(Dataset):
    """``n`` clips of each video of a clip dataset: items ``{"video": [n, 3, T, H, W], "index": i}``.

    The video is decoded once and cut where :meth:`ClipSampler.spread` says, at the frame
    rate of the dataset's (inference) transform. An unreadable video gives ``None`` and
    is recorded in the dataset's ``skipped`` log. ``cache`` (path -> decoded video) keeps
    decoded videos for later passes over the same data.
    """

    def __init__(self, dataset: Any, clips: int = 1, cache: dict[str, Any] | None = None) -> None:
        if clips < 1:
            raise ValueError(f"clips per video must be at least 1, got {clips}")
        self.dataset, self.clips, self.cache = dataset, int(clips), cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        import torch

        ds = self.dataset
        path = ds.video_path(index)
        video = self.cache.get(str(path)) if self.cache is not None else None
        if video is None:
            try:
                video = load_video(path, **ds.file_options(path))
            except VideoReadError as e:
                ds.skipped.add(path, e)
                return None
            if self.cache is not None:
                self.cache[str(path)] = video
        spread = ds.sampler.spread(video.num_frames, video.fps, self.clips)
        scale = scale_tensor(None)
        if isinstance(ds.transform, VideoTransform):  # at the model's field of view, as single clips are
            file_scale = ds.scale_of(index, video.meta.get("cm_per_px"))
            scaled = [ds.transform.scaled(video.frames[idx], cm_per_px=file_scale) for idx in spread]
            clips, scale = [x for x, _ in scaled], scaled[0][1]
        else:
            clips = [ds.transform(video.frames[idx]) for idx in spread]
        return {"video": torch.stack(clips), "index": index, "cm_per_px": scale}
