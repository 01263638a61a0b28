"""Writing a simulated cohort to disk as an EchoNet-Dynamic folder plus a report manifest.

Layout (the EchoNet-Dynamic release's, so every real-data path runs on it)::

    out/
      FileList.csv         FileName (no extension), EF, ESV, EDV, FrameHeight, FrameWidth,
                           FPS, NumberOfFrames, Split (TRAIN / VAL / TEST, by patient)
      VolumeTracings.csv   FileName (with .avi), X1, Y1, X2, Y2, Frame: per traced frame
                           (ED and ES) the long axis, then 20 chords across the LV
      Videos/<FileName>.avi   <study_id>_<view>, then _2, _3 for repeated acquisitions
      manifest.parquet     one row per video: video_path (relative), report, ids, view,
                           ef (true), reported_ef (the EF the report states; NaN where it
                           states none), edv, esv, heart_rate, fps, cm_per_px (and _x,
                           _y: across and down), split, device_* and
                           finding_* flags; the same report and labels on every row of
                           a study. Studies of varying views (``videos_per_view`` or
                           ``view_missing`` set) add video_index (within the study) and
                           repeat (the acquisition of its view: 0 the first)
      simulation.json      the arguments that made it

The folder is written under ``<out>.tmp`` and renamed at the end: a reader never sees
half a data set.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoclip import atomic
from echoclip.data.synthetic.anatomy import DEVICES, FINDINGS, VIEWS, Patient, rng_for
from echoclip.data.synthetic.cohort import plan_cohort, report_rng, study_state
from echoclip.data.synthetic.realism import Realism, get_realism
from echoclip.data.synthetic.reports import compose_report
from echoclip.data.synthetic.study import render_study
from echoclip.errors import DataError
from echoclip.processes import process_pool

__all__ = ["simulate_dataset", "patient_split", "study_videos"]

TAG_SPLIT, TAG_VIEWS = 7, 8
ECHONET_SPLIT = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def patient_split(patient_seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a patient: all of a patient's studies share it."""
    u = float(rng_for(patient_seed, TAG_SPLIT).random())
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def study_videos(
    study_seed: int,
    views: Sequence[str],
    videos_per_view: int | tuple[int, int] = 1,
    view_missing: float = 0.0,
) -> list[tuple[str, int]]:
    """The videos a study holds, as ``(view, repeat)`` pairs in the order of ``views``.

    Each view is missing with probability ``view_missing`` (but a study keeps at least
    one), and a present view has ``videos_per_view`` acquisitions (an int, or ``(lo,
    hi)`` drawn uniformly), numbered by ``repeat`` from 0. The draws come from the
    study's seed alone, so a study is the same in any data set and with any workers.

    Example::

        >>> study_videos(7, ("A4C", "PLAX"), videos_per_view=(1, 3), view_missing=0.1)  # doctest: +SKIP
        [('A4C', 0), ('A4C', 1), ('PLAX', 0)]
    """
    lo, hi = _count_range(videos_per_view)
    _check_view_missing(view_missing)
    if (lo, hi) == (1, 1) and view_missing == 0.0:
        return [(view, 0) for view in views]
    rng = rng_for(study_seed, TAG_VIEWS)
    present = rng.random(len(views)) >= view_missing
    if not present.any():
        present[int(rng.integers(len(views)))] = True
    counts = rng.integers(lo, hi + 1, size=len(views))
    return [(view, k) for view, keep, n in zip(views, present, counts, strict=True) if keep for k in range(n)]


def _check_view_missing(view_missing: float) -> None:
    if not 0.0 <= view_missing < 1.0:
        raise DataError(f"view_missing must be a probability in [0, 1), got {view_missing}")


def _count_range(videos_per_view: int | tuple[int, int]) -> tuple[int, int]:
    """``(lo, hi)`` from an int or a pair, checked: 1 <= lo <= hi."""
    if isinstance(videos_per_view, int | np.integer):
        lo = hi = int(videos_per_view)
    else:
        lo, hi = (int(v) for v in videos_per_view)
    if not 1 <= lo <= hi:
        raise DataError(
            f"videos per view must be a count or a range lo-hi with 1 <= lo <= hi, got {videos_per_view}"
        )
    return lo, hi


def simulate_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    size: int = 112,
    frames: int = 64,
    fps: float = 50.0,
    views: Sequence[str] = ("A4C",),
    codec: str = "mjpeg",
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    realism: str | Realism = "clean",
    videos_per_view: int | tuple[int, int] = 1,
    view_missing: float = 0.0,
) -> Path:
    """Simulate ``n`` studies (by default one video per view each) and write them to ``out_dir``.

    Returns the folder. The reports are those of :func:`simulate_reports` for the same
    ``n``, ``seed`` and ``realism``. An existing ``out_dir`` is replaced only with ``overwrite=True``.
    ``workers`` processes render the videos; the data set is the same for any number.
    ``realism`` (a preset name or a :class:`Realism`) varies the acquisitions and the
    reports; ``"clean"`` is the textbook world, and the same as before realism existed.
    ``videos_per_view`` and ``view_missing`` make studies as a lab records them: some
    views missing, some acquired more than once (see :func:`study_videos`); every video
    of a study shows the same heart and carries the study's one report.

    Example::

        >>> simulate_dataset("sim", n=100, seed=0, views=VIEWS, videos_per_view=(1, 3), view_missing=0.1)  # doctest: +SKIP

    Raises:
        DataError: ``n`` < 1, an unknown view, a bad ``videos_per_view`` or
            ``view_missing``, or ``out_dir`` exists.
        OSError: ``out_dir`` cannot be written.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    views = tuple(views)
    realism = get_realism(realism)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise DataError(f"unknown or no views {bad or list(views)}; known: {', '.join(VIEWS)}")
    lo, hi = _count_range(videos_per_view)
    _check_view_missing(view_missing)
    varied = (lo, hi) != (1, 1) or view_missing > 0.0  # else the one-video-per-view layout
    plans = plan_cohort(n, seed)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (choose another folder or overwrite it)")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    (tmp / "Videos").mkdir(parents=True)

    files: list[dict[str, object]] = []
    tracings: list[dict[str, object]] = []
    manifest: list[dict[str, object]] = []
    patients: dict[int, Patient] = {}
    try:
        # states and reports follow each patient from visit to visit (cheap, in order);
        # rendering is independent per video and is what takes the time
        jobs = []
        for plan in plans:
            state = study_state(plan, patients)
            written = compose_report(state, report_rng(plan.study_seed), realism.report)
            split = patient_split(plan.patient_seed)
            for index, (view, repeat) in enumerate(
                study_videos(plan.study_seed, views, (lo, hi), view_missing)
            ):
                jobs.append(
                    _RenderJob(
                        state,
                        written.text,
                        plan.study_seed,
                        view,
                        split,
                        realism,
                        written.stated_ef,
                        repeat,
                        index,
                    )
                )
        render = functools.partial(
            _render_and_save, folder=tmp / "Videos", size=size, frames=frames, fps=fps, codec=codec
        )
        with _pool(workers) as pool:
            truths = pool.map(render, jobs, chunksize=8) if pool else map(render, jobs)
            for job, truth in tqdm(
                zip(jobs, truths, strict=True),
                total=len(jobs),
                desc="simulate",
                unit="video",
                disable=not progress,
            ):
                state, report, view, split = job.state, job.report, job.view, job.split
                name = job.name
                files.append(
                    {
                        "FileName": name,
                        "EF": round(truth.ef, 2),
                        "ESV": round(truth.esv, 2),
                        "EDV": round(truth.edv, 2),
                        "FrameHeight": size,
                        "FrameWidth": size,
                        "FPS": truth.fps,
                        "NumberOfFrames": truth.frames,
                        "Split": ECHONET_SPLIT[split],
                    }
                )
                tracings += [
                    {"FileName": f"{name}.avi", "X1": x1, "Y1": y1, "X2": x2, "Y2": y2, "Frame": frame}
                    for x1, y1, x2, y2, frame in truth.tracings
                ]
                row: dict[str, object] = {
                    "video_path": f"Videos/{name}.avi",
                    "report": report,
                    "patient_id": state.patient_id,
                    "study_id": state.study_id,
                    "view": view,
                    **({"video_index": job.index, "repeat": job.repeat} if varied else {}),
                    "ef": truth.ef,
                    "reported_ef": float("nan") if truth.reported_ef is None else truth.reported_ef,
                    "edv": truth.edv,
                    "esv": truth.esv,
                    "heart_rate": truth.heart_rate,
                    "cm_per_px": truth.cm_per_px,
                    # across and down: they differ on a dual screen (squeezed across)
                    "cm_per_px_x": truth.cm_per_px_x,
                    "cm_per_px_y": truth.cm_per_px,
                    # the sizes reports state (the measurements prompt set reads them)
                    "lvidd_cm": round(state.lvidd, 1),
                    "ivsd_cm": round(state.wall_cm, 1),
                    "la_volume_index": round(state.la_index),
                    "fps": truth.fps,
                    "split": split,
                    "visit": state.visit,
                    "ed_frame": truth.ed_frame,
                    "es_frame": truth.es_frame,
                }
                row.update({f"device_{d}": d in state.devices for d in DEVICES})
                row.update({f"visible_{d}": d in truth.visible_devices for d in DEVICES})
                row.update({f"finding_{f}": f in state.findings for f in FINDINGS})
                manifest.append(row)
        pd.DataFrame(files).to_csv(tmp / "FileList.csv", index=False)
        columns = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
        pd.DataFrame(tracings, columns=columns).to_csv(tmp / "VolumeTracings.csv", index=False)
        pd.DataFrame(manifest).to_parquet(tmp / "manifest.parquet", index=False)
        info = {
            "n": n,
            "seed": seed,
            "size": size,
            "frames": frames,
            "fps": fps,
            "views": list(views),
            "codec": codec,
            "realism": realism.name,
        }
        if varied:
            info.update(videos_per_view=[lo, hi], view_missing=view_missing)
        (tmp / "simulation.json").write_text(json.dumps(info, indent=2) + "\n")
        atomic.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass(frozen=True)
class _RenderJob:
    state: Any
    report: str
    study_seed: int
    view: str
    split: str
    realism: Realism
    reported_ef: float | None
    repeat: int = 0  # the acquisition of this view in the study (0 the first)
    index: int = 0  # the video within the study

    @property
    def name(self) -> str:
        """The file's name without extension: the first acquisition of a view keeps the plain name."""
        suffix = f"_{self.repeat + 1}" if self.repeat else ""
        return f"{self.state.study_id}_{self.view}{suffix}"


def _render_and_save(job: _RenderJob, folder: Path, size: int, frames: int, fps: float, codec: str) -> Any:
    """Render one video, write it, return its ground truth (runs in worker processes)."""
    from echoclip.data.video import save_video

    study = render_study(
        job.state,
        job.report,
        job.study_seed,
        job.view,
        size,
        frames,
        fps,
        realism=job.realism,
        reported_ef=job.reported_ef,
        repeat=job.repeat,
    )
    save_video(study.video, folder / f"{job.name}.avi", codec=codec)
    return study.truth


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A process pool of ``workers`` (:func:`echoclip.processes.process_pool`), or None."""
    if workers <= 1:
        yield None
        return
    with process_pool(workers) as pool:
        yield pool
