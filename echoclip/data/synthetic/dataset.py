"""Writing a simulated cohort to disk as an EchoNet-Dynamic folder plus a report manifest.

Layout (the EchoNet-Dynamic release's, so every real-data path runs on it)::

    out/
      FileList.csv         FileName (no extension), EF, ESV, EDV, FrameHeight, FrameWidth,
                           FPS, NumberOfFrames, Split (TRAIN / VAL / TEST, by patient)
      VolumeTracings.csv   FileName (with .avi), X1, Y1, X2, Y2, Frame: per traced frame
                           (ED and ES) the long axis, then 20 chords across the LV
      Videos/<FileName>.avi
      manifest.parquet     one row per video: video_path (relative), report, ids, view,
                           ef (true), reported_ef (the EF the report states; NaN where it
                           states none), edv, esv, heart_rate, fps, cm_per_px (and _x,
                           _y: across and down), split, device_* and
                           finding_* flags
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

from echoclip import atomic
from echoclip.data.synthetic.anatomy import DEVICES, FINDINGS, VIEWS, Patient, rng_for
from echoclip.data.synthetic.cohort import plan_cohort, report_rng, study_state
from echoclip.data.synthetic.realism import Realism, get_realism
from echoclip.data.synthetic.reports import compose_report
from echoclip.data.synthetic.study import render_study
from echoclip.errors import DataError
from echoclip.processes import process_pool

__all__ = ["simulate_dataset", "patient_split"]

TAG_SPLIT = 7
ECHONET_SPLIT = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def patient_split(patient_seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a patient: all of a patient's studies share it."""
    u = float(rng_for(patient_seed, TAG_SPLIT).random())
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


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
) -> Path:
    """Simulate ``n`` studies (one video per view each) and write them to ``out_dir``.

    Returns the folder. The reports are those of :func:`simulate_reports` for the same
    ``n``, ``seed`` and ``realism``. An existing ``out_dir`` is replaced only with ``overwrite=True``.
    ``workers`` processes render the videos; the data set is the same for any number.
    ``realism`` (a preset name or a :class:`Realism`) varies the acquisitions and the
    reports; ``"clean"`` is the textbook world, and the same as before realism existed.

    Raises:
        DataError: ``n`` < 1, an unknown view, or ``out_dir`` exists.
        OSError: ``out_dir`` cannot be written.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    views = tuple(views)
    realism = get_realism(realism)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise DataError(f"unknown or no views {bad or list(views)}; known: {', '.join(VIEWS)}")
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
            for view in views:
                jobs.append(
                    _RenderJob(state, written.text, plan.study_seed, view, split, realism, written.stated_ef)
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
                name = f"{state.study_id}_{view}"
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
    )
    save_video(study.video, folder / f"{job.state.study_id}_{job.view}.avi", codec=codec)
    return study.truth


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A process pool of ``workers`` (:func:`echoclip.processes.process_pool`), or None."""
    if workers <= 1:
        yield None
        return
    with process_pool(workers) as pool:
        yield pool
