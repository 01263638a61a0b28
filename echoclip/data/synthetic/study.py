"""One simulated echo study: a video, the report written for it, and its ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from echoclip.data.synthetic.anatomy import (
    TAG_RENDER,
    VIEWS,
    CardiacState,
    Patient,
    cardiac_state,
    make_patient,
    rng_for,
    with_findings,
)
from echoclip.data.synthetic.cohort import report_rng
from echoclip.data.synthetic.realism import Realism, get_realism
from echoclip.data.synthetic.render import render_view, visible_devices, visible_findings
from echoclip.data.synthetic.reports import compose_report
from echoclip.data.video import Video
from echoclip.errors import DataError

__all__ = ["Study", "StudyTruth", "simulate_study"]


@dataclass(frozen=True)
class StudyTruth:
    """What is true of a simulated study (and of its one video)."""

    ef: float
    edv: float
    esv: float
    heart_rate: float
    fps: float
    view: str
    devices: tuple[str, ...]
    findings: tuple[str, ...]
    patient_id: str
    study_id: str
    ed_frame: int
    es_frame: int
    lv_mask_ed: np.ndarray  # bool [H,W]
    lv_mask_es: np.ndarray
    visible_devices: tuple[str, ...]  # the devices this view shows
    lv_volumes: np.ndarray = field(repr=False)  # LV volume (mL) at each frame
    regions: dict[str, np.ndarray] = field(repr=False)  # chamber and valve masks at end-diastole
    tracings: list[tuple[float, float, float, float, int]] = field(repr=False)  # VolumeTracings rows
    sector_mask: np.ndarray = field(repr=False)
    cm_per_px: float = 0.0  # down the frame (and across, but on a dual screen)
    depth_cm: float = 0.0
    frames: int = 0  # the clip's length (the acquisition's frame rate sets it)
    cm_per_px_x: float = 0.0  # across the frame
    state: CardiacState | None = field(default=None, repr=False)
    reported_ef: float | None = None  # the EF the report states (None: it states none)
    visible_findings: tuple[str, ...] = ()  # the findings this view shows

    @property
    def reduced_lv_function(self) -> bool:
        return self.ef < 50.0


@dataclass(frozen=True)
class Study:
    video: Video
    report: str
    truth: StudyTruth


def simulate_study(
    seed: int,
    *,
    size: int = 112,
    frames: int = 64,
    fps: float = 50.0,
    view: str | None = None,
    patient: Patient | int | None = None,
    visit: int = 0,
    devices: tuple[str, ...] | None = None,
    findings: tuple[str, ...] | None = None,
    realism: str | Realism = "clean",
) -> Study:
    """Simulate one echo study: a ``frames``-long clip at ``fps``, ``size``×``size`` pixels.

    The same arguments give byte-identical frames and the same report. ``patient`` (a
    :class:`Patient` or its seed) keeps the anatomy across studies; by default each seed
    is a new patient. ``view`` defaults to ``"A4C"``. ``devices`` overrides the devices
    present (to see what a device changes, all else equal); ``findings`` the findings
    (:func:`~echoclip.data.synthetic.anatomy.with_findings`). ``realism`` (a preset name or
    a :class:`Realism`) varies the acquisition and the report; ``"clean"`` is the textbook.

    Example::

        >>> study = simulate_study(7, view="PLAX")
        >>> study.video.frames.shape, round(study.truth.ef)   # doctest: +SKIP
        ((64, 112, 112, 3), 58)
    """
    view = view or "A4C"
    if view not in VIEWS:
        raise DataError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
    if size < 32 or frames < 2 or not fps > 0:
        raise DataError(f"a study needs size >= 32, frames >= 2 and fps > 0, got {size}, {frames}, {fps}")
    if patient is None:
        patient = make_patient(seed)
    elif not isinstance(patient, Patient):
        patient = make_patient(int(patient))
    state = cardiac_state(patient, visit, seed)
    if devices is not None:
        state = _with_devices(state, devices)
    if findings is not None:
        state = with_findings(state, findings)
    realism = get_realism(realism)
    written = compose_report(state, report_rng(seed), realism.report)
    return render_study(
        state, written.text, seed, view, size, frames, fps, realism=realism, reported_ef=written.stated_ef
    )


def render_study(
    state: CardiacState,
    report: str,
    seed: int,
    view: str,
    size: int,
    frames: int,
    fps: float,
    *,
    realism: Realism | None = None,
    reported_ef: float | None = None,
    repeat: int = 0,
) -> Study:
    """Render the video of a study in one view (each view its own acquisition).

    ``realism`` gives the acquisition's variation (``None``: the textbook scanner);
    ``reported_ef`` is the EF ``report`` states, recorded in the truth. ``repeat``
    numbers the acquisitions of the same view in one study (0 the first): the same
    heart, caught with its own probe pose, timing and noise.
    """
    if repeat < 0:
        raise DataError(f"repeat must be 0 or more, got {repeat}")
    # the first acquisition keeps the stream a one-video-per-view study has always used
    stream = (VIEWS.index(view),) if repeat == 0 else (VIEWS.index(view), repeat)
    rendered = render_view(
        state,
        view,
        size,
        frames,
        fps,
        rng_for(seed, TAG_RENDER, *stream),
        acquisition=None if realism is None else realism.acquisition,
    )
    meta = {
        "source": "synthetic",
        "view": view,
        "height": size,
        "width": size,
        "depth_cm": rendered.depth_cm,
        "cm_per_px": (rendered.cm_per_px_x, rendered.cm_per_px),
        "sector": rendered.sector.as_meta(),
    }
    truth = StudyTruth(
        ef=state.ef,
        edv=state.edv,
        esv=state.esv,
        heart_rate=state.heart_rate,
        fps=float(rendered.fps),
        view=view,
        devices=state.devices,
        findings=state.findings,
        patient_id=state.patient_id,
        study_id=state.study_id,
        ed_frame=rendered.timing.ed_frame,
        es_frame=rendered.timing.es_frame,
        lv_mask_ed=rendered.lv_mask_ed,
        lv_mask_es=rendered.lv_mask_es,
        visible_devices=visible_devices(state, view),
        lv_volumes=rendered.lv_volumes,
        regions=rendered.regions,
        tracings=rendered.tracings,
        sector_mask=rendered.sector.mask(),
        cm_per_px=rendered.cm_per_px,
        depth_cm=rendered.depth_cm,
        frames=int(rendered.frames.shape[0]),
        cm_per_px_x=rendered.cm_per_px_x,
        state=state,
        reported_ef=reported_ef,
        visible_findings=visible_findings(state, view),
    )
    return Study(Video(rendered.frames, float(rendered.fps), meta), report, truth)


def _with_devices(state: CardiacState, devices: tuple[str, ...]) -> CardiacState:
    from dataclasses import replace

    from echoclip.data.synthetic.anatomy import DEVICES

    unknown = set(devices) - set(DEVICES)
    if unknown:
        raise DataError(f"unknown devices {sorted(unknown)}; known: {', '.join(DEVICES)}")
    return replace(state, devices=tuple(d for d in DEVICES if d in devices))
