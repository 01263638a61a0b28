"""Preprocessed clips in webdataset tar shards, written resumably and read per rank and worker.

Decoding DICOM and AVI files and resizing them costs more than a small model's
training step; at scale, clips are decoded once into shards of ``uint8`` clips at the
training resolution. Each sample of a shard holds::

    <key>.clip.npy     uint8 [T, H, W, 3]
    <key>.report.txt   the report
    <key>.labels.json  {"ef": 55.0, "labels": {"device_pacemaker": 0.0, ...},
                        "cm_per_px": [x, y] of the stored clip} (null: unknown)
    <key>.ids.json     {"study_id", "patient_id", "row"}

Shard ``k`` holds manifest rows ``[k*S, (k+1)*S)``, so the work splits into fixed
units. A shard is written under a temporary name and renamed when complete, then
recorded in ``shards.json`` (also replaced atomically): a run killed at any moment
restarts with the shards it finished and redoes only the others, and no study is
written twice. Unreadable videos are skipped, recorded per shard, and reported in
``skipped.csv`` at the end.

Split across ranks (:mod:`echoclip.ranks`), rank ``r`` of ``N`` writes the shards
``k ≡ r (mod N)`` and records them in its own ``parts/rank-XXXXX/shards.json``, so no
two processes ever replace one file; :func:`merge_shards` checks that every shard is
complete and writes the one ``shards.json`` and ``skipped.csv``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from echoclip import atomic
from echoclip.data.augment import sample_rng
from echoclip.data.datasets import Manifest, SkipRecord, write_skip_report
from echoclip.data.deid import shown_path
from echoclip.data.scale import scale_tensor
from echoclip.data.transforms import ClipSampler, PreprocessConfig, VideoTransform
from echoclip.errors import DataError
from echoclip.ranks import PARTS, Ranks, check_parts, part_dir, rank_of_part

__all__ = ["ShardConfig", "ShardSummary", "write_shards", "merge_shards", "ShardDataset", "STATE_FILE"]

log = logging.getLogger(__name__)

STATE_FILE = "shards.json"


@dataclass(frozen=True)
class ShardConfig:
    """How clips are cut for the shards (part of what a resumed run must match)."""

    image_size: int = 112
    num_frames: int = 16
    fps: float | None = None
    shard_size: int = 256
    split: str | None = None
    # the physical field of view clips of known scale are resampled to (PreprocessConfig.field_cm)
    field_cm: float | None = None

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.num_frames < 1 or self.shard_size < 1:
            raise ValueError(f"image_size, num_frames and shard_size must be >= 1: {self}")


@dataclass
class ShardSummary:
    """What a :func:`write_shards` run produced."""

    out_dir: Path
    shards: list[str]
    samples: int
    skipped: list[SkipRecord] = field(default_factory=list)
    resumed: int = 0  # shards found complete from an earlier run
    part: str = ""  # "rank R of N" when this is one rank's share, not yet merged

    def line(self) -> str:
        text = f"wrote {self.samples} clips in {len(self.shards)} shards to {self.out_dir}"
        if self.part:
            text = f"{self.part}: {text}"
        if self.resumed:
            text += f" ({self.resumed} shards kept from an earlier run)"
        if self.part:
            return text + f"; {len(self.skipped)} files skipped"
        return text + f"; {len(self.skipped)} files skipped (see {self.out_dir / 'skipped.csv'})"


class _Uint8Clip(VideoTransform):
    """The preprocessing transform: the clip at the model's size and field of view, kept ``uint8``."""

    def _to_input(self, frames: np.ndarray, rng: Any = None, cm_per_px: Any = None) -> tuple[np.ndarray, Any]:
        frames, scale = self.resized(frames, cm_per_px)
        return frames, scale_tensor(scale)


def _open_manifest(manifest: Path, config: ShardConfig, read_options: dict[str, Any] | None) -> Manifest:
    clip = ClipSampler(num_frames=config.num_frames, fps=config.fps, start="center")
    return Manifest(
        manifest,
        split=config.split,
        transform=_Uint8Clip(
            PreprocessConfig(
                image_size=config.image_size,
                num_frames=config.num_frames,
                fps=config.fps,
                field_cm=config.field_cm,
            )
        ),
        clip=clip,
        read_options=read_options,
    )


def _fingerprint(ds: Manifest, config: ShardConfig) -> str:
    h = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for path, study in zip(ds.table["video_path"], ds.table["study_id"], strict=True):
        h.update(f"{path}\x00{study}\n".encode())
    return h.hexdigest()


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def write_shards(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: ShardConfig = ShardConfig(),
    *,
    workers: int = 1,
    progress: bool = True,
    read_options: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
) -> ShardSummary:
    """Decode every video of ``manifest`` once into webdataset shards under ``out_dir``.

    Resumable: run it again after a kill and it completes the missing shards only.
    ``workers > 1`` writes shards in parallel processes. With ``ranks`` of a world of
    several, this process writes only the shards ``k ≡ rank (mod world)`` and records
    them in its own ``parts/rank-XXXXX/shards.json`` (ranks never write one file
    together); :func:`merge_shards` then makes the one ``shards.json``.

    Raises:
        DataError: ``out_dir`` holds shards of another manifest or other settings.
    """
    from tqdm.auto import tqdm

    ranks = ranks or Ranks()
    manifest, out = Path(manifest), Path(out_dir)
    ds = _open_manifest(manifest, config, read_options)
    fingerprint = _fingerprint(ds, config)
    out.mkdir(parents=True, exist_ok=True)
    merged = _load_state(out)
    if merged and merged.get("fingerprint") != fingerprint:
        raise DataError(f"{out}: holds shards of another manifest or other settings; write to a new folder")
    n = len(ds)
    if n == 0:
        raise DataError(f"{manifest}: no videos to preprocess")
    num_shards = math.ceil(n / config.shard_size)
    fresh = {"fingerprint": fingerprint, "config": asdict(config), "num_shards": num_shards, "done": {}}
    if ranks.split:
        state_dir = part_dir(out, ranks.rank)
        state = _load_state(state_dir)
        if state and (state.get("fingerprint") != fingerprint or state.get("world_size") != ranks.world_size):
            raise DataError(
                f"{state_dir / STATE_FILE}: a part of another manifest, settings or world size; "
                "write to a new folder"
            )
        state = state or {**fresh, "rank": ranks.rank, "world_size": ranks.world_size}
        mine = list(ranks.mine(num_shards))
        for k in mine:  # shards an earlier merged run completed are done here too
            if merged and _shard_name(k) in merged["done"]:
                state["done"].setdefault(_shard_name(k), merged["done"][_shard_name(k)])
        _save_state(state_dir, state)  # the merge sees this rank even if it owns no shard
    else:
        state_dir, state, mine = out, merged or fresh, list(range(num_shards))
    done: dict[str, Any] = state["done"]
    todo = [k for k in mine if _shard_name(k) not in done or not (out / _shard_name(k)).is_file()]
    resumed = len(mine) - len(todo)
    for k in todo:  # left by a killed run; another rank's half-written shards are not ours to remove
        atomic.temp_path(out / _shard_name(k)).unlink(missing_ok=True)

    def finish(k: int, count: int, skipped: list[tuple[str, ...]]) -> None:
        done[_shard_name(k)] = {"count": count, "rows": _rows(k, config.shard_size, n), "skipped": skipped}
        _save_state(state_dir, state)

    total = sum(len(range(*_rows(k, config.shard_size, n))) for k in mine)
    rows_done = sum(len(range(*v["rows"])) for v in done.values())
    with tqdm(total=total, initial=rows_done, unit="video", desc="preprocess", disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for k in todo:
                count, skipped = _write_shard(ds, out, k, config, bar.update)
                finish(k, count, skipped)
        else:
            from echoclip.processes import process_pool

            with process_pool(workers, initializer=_one_thread) as pool:
                futures = {
                    pool.submit(_write_shard_job, manifest, out, k, config, read_options): k for k in todo
                }
                for future in as_completed(futures):
                    k = futures[future]
                    count, skipped = future.result()
                    finish(k, count, skipped)
                    bar.update(len(range(*_rows(k, config.shard_size, n))))

    skipped_records = [SkipRecord(*entry) for v in done.values() for entry in v["skipped"]]
    if not ranks.split:
        write_skip_report(skipped_records, out / "skipped.csv")
    shards = sorted(done)
    return ShardSummary(
        out,
        shards,
        sum(v["count"] for v in done.values()),
        skipped_records,
        resumed,
        part=ranks.label() if ranks.split else "",
    )


def merge_shards(out_dir: str | os.PathLike[str]) -> ShardSummary:
    """Combine the ranks' records (``parts/rank-*/shards.json``) into one ``shards.json``.

    What one process would have written: the same shards, the same record, one
    ``skipped.csv``. The part records are removed once the merged one is in place.

    Raises:
        DataError: no parts, parts of different runs, a rank missing, or shards not complete.
    """
    import shutil

    out = Path(out_dir)
    files = sorted((out / PARTS).glob(f"rank-*/{STATE_FILE}"))
    if not files:
        raise DataError(f"{out}: no rank parts to merge ({PARTS}/rank-*/{STATE_FILE})")
    parts = {rank_of_part(f.parent): _load_state(f.parent) for f in files}
    first = check_parts(
        out,
        parts,
        ("fingerprint", "num_shards", "world_size"),
        STATE_FILE,
        "another manifest, settings or world size",
        DataError,
    )
    merged = _load_state(out)
    if merged and merged.get("fingerprint") != first["fingerprint"]:
        raise DataError(f"{out / STATE_FILE}: records shards of another manifest or other settings")
    done: dict[str, Any] = dict(merged["done"]) if merged else {}
    for state in parts.values():
        done.update(state["done"])
    names = [_shard_name(k) for k in range(int(first["num_shards"]))]
    incomplete = [name for name in names if name not in done or not (out / name).is_file()]
    if incomplete:
        world = int(first["world_size"])
        owners = sorted({int(name[6:12]) % world for name in incomplete})
        raise DataError(
            f"{out}: {len(incomplete)} shards not complete (first {incomplete[0]}); "
            f"rerun ranks {owners} of {world}, then merge"
        )
    state = {k: first[k] for k in ("fingerprint", "config", "num_shards")}
    state["done"] = {name: done[name] for name in names}
    _save_state(out, state)
    skipped = [SkipRecord(*entry) for v in state["done"].values() for entry in v["skipped"]]
    write_skip_report(skipped, out / "skipped.csv")
    shutil.rmtree(out / PARTS)
    return ShardSummary(out, names, sum(v["count"] for v in state["done"].values()), skipped)


def _rows(k: int, shard_size: int, n: int) -> tuple[int, int]:
    return k * shard_size, min((k + 1) * shard_size, n)


def _one_thread() -> None:
    """Parallelism comes from the processes; torch threads inside each would oversubscribe."""
    import torch

    torch.set_num_threads(1)


_JOB_MANIFESTS: dict[Any, Manifest] = {}


def _write_shard_job(
    manifest: Path, out: Path, k: int, config: ShardConfig, read_options: dict[str, Any] | None
) -> tuple[int, list[tuple[str, ...]]]:
    key = (manifest, config, json.dumps(read_options, sort_keys=True, default=str))
    if key not in _JOB_MANIFESTS:  # one manifest read per worker process, not per shard
        _JOB_MANIFESTS[key] = _open_manifest(manifest, config, read_options)
    return _write_shard(_JOB_MANIFESTS[key], out, k, config, lambda _: None)


def _write_shard(
    ds: Manifest, out: Path, k: int, config: ShardConfig, advance: Callable[[int], Any]
) -> tuple[int, list[tuple[str, ...]]]:
    """Write shard ``k`` (rows ``[k*S, (k+1)*S)``) atomically; return its sample count and skipped files."""
    import webdataset as wds

    first, last = _rows(k, config.shard_size, len(ds))
    final = out / _shard_name(k)
    count, skipped = 0, []
    with atomic.writing(final) as tmp, open(tmp, "wb") as f:
        writer = wds.TarWriter(f, mtime=0)
        for row in range(first, last):
            item = ds[row]
            advance(1)
            if item is None:
                path = ds.video_path(row)
                record = ds.skipped.get(path) or SkipRecord(shown_path(path, ds.root), "unreadable")
                skipped.append((record.path, record.reason, record.key))
                continue
            writer.write(
                {
                    "__key__": f"{row:09d}",
                    "clip.npy": np.ascontiguousarray(item["video"]),
                    "report.txt": item["report"],
                    "labels.json": {
                        "ef": _json_float(item["ef"]),
                        "labels": {k: _json_float(v) for k, v in item["labels"].items()},
                        "cm_per_px": _json_scale(item["cm_per_px"]),
                    },
                    "ids.json": {"study_id": item["study_id"], "patient_id": item["patient_id"], "row": row},
                }
            )
            count += 1
        writer.close()
    return count, skipped


def _load_state(out: Path) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise DataError(f"{path}: the shard record is not valid JSON; write to a new folder") from None


def _save_state(out: Path, state: dict[str, Any]) -> None:
    atomic.write_text(out / STATE_FILE, json.dumps(state, indent=1))


# ---------------------------------------------------------------------------------------
# reading


class ShardDataset(IterableDataset):
    """Samples of preprocessed shards, split across distributed ranks and DataLoader workers.

    Rank ``r`` of ``world`` reads shards ``r, r+world, ...``; within a rank, worker
    ``w`` of ``W`` takes every ``W``-th of those. With ``shuffle`` the shard order is
    permuted per epoch (the same permutation on every rank). Items are the dicts of
    :class:`~echoclip.data.datasets.Manifest`, with ``index`` the manifest row, and
    the transform's randomness comes from ``(seed, epoch, row)``.

    Example::

        ds = ShardDataset("runs/shards", transform=TrainTransform(cfg, seed=0), shuffle=True)
        loader = DataLoader(ds, batch_size=32, num_workers=4)
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        transform: Callable[..., Any] | None = None,
        *,
        seed: int | None = None,
        shuffle: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.shards, state = _list_shards(source)
        if transform is None:
            cfg = (state or {}).get("config", {})
            transform = VideoTransform(
                PreprocessConfig(image_size=cfg.get("image_size", 112), num_frames=cfg.get("num_frames", 16))
            )
        self.transform = transform
        self.num_samples = sum(v["count"] for v in state["done"].values()) if state else None
        self.seed = int(seed if seed is not None else getattr(transform, "seed", 0))
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shards_for(self, rank: int, world_size: int, worker: int = 0, num_workers: int = 1) -> list[Path]:
        """The shards that rank ``rank``'s worker ``worker`` reads this epoch."""
        order = list(self.shards)
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(order))
            order = [order[i] for i in perm]
        return order[rank::world_size][worker::num_workers]

    def _placement(self) -> tuple[int, int, int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                rank, world = dist.get_rank(), dist.get_world_size()
            else:
                rank, world = 0, 1
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        mine = self.shards_for(*self._placement())
        for shard in mine:
            for sample in iter_shard(shard):
                row = int(sample["ids"]["row"])
                rng = sample_rng(self.seed, self.epoch, row)
                frames = sample["clip"]
                targets = sample["labels"]
                scale = targets.get("cm_per_px")
                if isinstance(self.transform, VideoTransform):
                    video, scale = self.transform.scaled(frames, rng, cm_per_px=scale)
                else:
                    video, scale = self.transform(frames), scale_tensor(None)
                yield {
                    "video": video,
                    "report": sample["report"],
                    "study_id": str(sample["ids"]["study_id"]),
                    "patient_id": str(sample["ids"]["patient_id"]),
                    "ef": _float(targets.get("ef")),
                    "labels": {k: _float(v) for k, v in targets.get("labels", {}).items()},
                    "index": row,
                    "cm_per_px": scale,
                }

    def __repr__(self) -> str:
        return f"ShardDataset({len(self.shards)} shards, {self.num_samples} samples)"


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _json_scale(scale: Any) -> list[float] | None:
    values = [float(v) for v in scale]
    return values if all(math.isfinite(v) for v in values) else None


def _json_float(value: float) -> float | None:
    """NaN is not JSON; an unknown value is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def iter_shard(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The samples of one shard, decoded: ``clip`` (uint8 array), ``report``, ``labels``, ``ids``.

    Only the members this module writes are decoded, numpy arrays without pickle: a
    shard from elsewhere cannot run code.
    """
    for key, files in _tar_samples(Path(path)):
        try:
            yield {
                "clip": np.load(io.BytesIO(files["clip.npy"]), allow_pickle=False),
                "report": files["report.txt"].decode("utf-8"),
                "labels": json.loads(files["labels.json"]),
                "ids": json.loads(files["ids.json"]),
            }
        except KeyError as e:
            raise DataError(f"{path}: sample {key} lacks {e.args[0]}") from None


def _tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group a webdataset tar's members by key (the file name up to its first dot), in order."""
    import tarfile

    key, files = None, {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                member_key, _, ext = name.partition(".")
                if member_key != key and files:
                    yield key, files
                    files = {}
                key = member_key
                files[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{path}: not a readable shard ({e})") from None
    if files:
        yield key, files


def _list_shards(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[list[Path], dict[str, Any] | None]:
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such shard folder")
        state = _load_state(folder)
        if state is None:
            if (folder / PARTS).is_dir():
                raise DataError(
                    f"{folder}: shards written by ranks, not merged yet; run `echoclip merge {folder}`"
                )
            raise DataError(f"{folder}: no {STATE_FILE}; write shards with `echoclip preprocess`")
        shards = [folder / name for name in sorted(state["done"])]
        if len(state["done"]) < state.get("num_shards", 0):
            log.warning(
                "%s: %d of %d shards are complete; reading those",
                folder,
                len(state["done"]),
                state["num_shards"],
            )
        return shards, state
    shards = [Path(p) for p in source]
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise DataError(f"shards not found: {missing[:5]}")
    return shards, None
