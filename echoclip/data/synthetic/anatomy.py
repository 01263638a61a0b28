"""Simulated patients and the cardiac state of one study, as numbers (no pixels).

A :class:`Patient` holds what stays fixed over years (sex, body size, LV shape, wall
thickness, right heart and atrial size, when devices get implanted); a
:class:`CardiacState` is one visit (EF, volumes, heart rate, the devices present that
day, findings with their severity, measurements). Reports are written from a
:class:`CardiacState` alone, so a report corpus needs no rendering.

The LV is half a prolate ellipsoid, cut at the mitral plane: semi-axes ``a`` (the
radius at the base) and ``c`` (apex to mitral plane), ``V = 2/3·π·a²·c``. Its length
follows ``c ∝ V**LONG_AXIS_EXPONENT`` and its width makes up the rest. A long-axis view
shows half an ellipse of area ``π·a·c/2``, for which the single-plane area-length formula
``V = 8·A²/(3·π·L)`` with ``L = c`` is exact; a short-axis view shows a circle of area
``∝ a² ∝ V**(1 - LONG_AXIS_EXPONENT)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

DEVICES: tuple[str, ...] = ("pacemaker", "tavr", "surgical_valve", "mitraclip", "impella")
FINDINGS: tuple[str, ...] = (
    "lv_dilation",
    "rv_dilation",
    "la_enlargement",
    "pericardial_effusion",
    "lv_hypertrophy",
)
VIEWS: tuple[str, ...] = ("A4C", "A2C", "PLAX", "PSAX")

# LV long axis ∝ volume**0.2: about 17 % longitudinal shortening at EF 60 %, 4 % at EF 20 %.
LONG_AXIS_EXPONENT = 0.2
EF_RANGE = (15.0, 80.0)
EDV_RANGE = (55.0, 250.0)
HR_RANGE = (50.0, 120.0)
# Upper limits of normal LV end-diastolic volume (mL), 2D echo, by sex.
EDV_UPPER_NORMAL = {"F": 106.0, "M": 150.0}
# LV wall thickness (cm): above this it is hypertrophy.
WALL_UPPER_NORMAL = {"F": 0.9, "M": 1.0}
LA_INDEX_UPPER_NORMAL = 34.0  # mL/m²
RV_SCALE_DILATED = 1.22  # RV width relative to a normal RV for the same body size
EFFUSION_MIN_CM = 0.3

# Seed-stream tags: each use of randomness draws from its own stream so that, e.g.,
# adding a device to a study never changes its speckle.
TAG_PATIENT, TAG_STUDY, TAG_REPORT, TAG_RENDER, TAG_DEVICE_RENDER, TAG_ID = 1, 2, 3, 4, 5, 6

# (probability present at the first visit, probability of being implanted at a later visit)
_DEVICE_ONSET = {
    "pacemaker": (0.13, 0.12),
    "tavr": (0.07, 0.08),
    "surgical_valve": (0.07, 0.04),
    "mitraclip": (0.05, 0.06),
}
_IMPELLA_PER_STUDY = 0.045


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A generator for one named stream of randomness under ``seed`` (no global state)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, *stream])


def short_id(prefix: str, seed: int, *stream: int) -> str:
    """A stable, meaningless identifier (``P3f09a1c2b7d4``) derived from a seed."""
    value = int(rng_for(seed, TAG_ID, *stream).integers(0, 2**48))
    return f"{prefix}{value:012x}"


@dataclass(frozen=True)
class Patient:
    """Anatomy that stays fixed across a patient's studies."""

    patient_id: str
    seed: int
    sex: str
    bsa: float  # body surface area, m²
    base_ef: float
    base_edv: float
    lv_shape: float  # LV length over base radius (c/a) at end-diastole
    wall_cm: float  # LV wall thickness at end-diastole
    rv_scale: float
    la_index: float  # LA volume index, mL/m²
    heart_rate: float
    image_quality: float  # 0 (poor windows) .. 1 (excellent)
    surgical_position: str  # "mitral" or "aortic": where a surgical valve goes
    device_onset: dict[str, int] = field(default_factory=dict)  # device -> first visit with it


@dataclass(frozen=True)
class CardiacState:
    """The heart of one patient at one visit: what a report describes and a video shows."""

    patient_id: str
    study_id: str
    visit: int
    sex: str
    bsa: float
    ef: float  # percent
    edv: float  # mL
    esv: float  # mL
    heart_rate: float  # beats per minute
    lv_shape: float
    wall_cm: float
    rv_scale: float
    la_index: float
    effusion_cm: float
    devices: tuple[str, ...]
    findings: tuple[str, ...]
    severity: dict[str, str]  # finding -> "mild" | "moderate" | "severe"
    surgical_position: str
    image_quality: float
    prior_ef: float | None  # EF at the previous visit (None at the first)
    rvsp: float  # mmHg
    tapse: float  # cm
    aortic_root: float  # cm

    @property
    def lvidd(self) -> float:
        """LV internal diameter at end-diastole (cm): the base diameter of the half ellipsoid."""
        return 2.0 * lv_axes(self.edv, self.edv, self.lv_shape)[0]

    @property
    def lvids(self) -> float:
        return 2.0 * lv_axes(self.esv, self.edv, self.lv_shape)[0]

    @property
    def systolic_fraction(self) -> float:
        return systolic_fraction(self.heart_rate)


def lv_axes(volume: np.ndarray | float, edv: float, shape: float) -> tuple[np.ndarray, np.ndarray]:
    """Base radius ``a`` and length ``c`` (cm) of the LV half ellipsoid holding ``volume`` mL."""
    volume = np.asarray(volume, dtype=np.float64)
    a_ed = (3.0 * edv / (2.0 * math.pi * shape)) ** (1.0 / 3.0)
    c = shape * a_ed * (volume / edv) ** LONG_AXIS_EXPONENT
    a = np.sqrt(3.0 * volume / (2.0 * math.pi * c))
    return a, c


def systolic_fraction(heart_rate: float) -> float:
    """Share of the cycle spent in systole: systole lasts about 0.32 s, diastole takes the rest."""
    return float(min(0.5, max(0.3, 0.32 * heart_rate / 60.0)))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(math.pi * x)


def lv_fill(phase: np.ndarray, systole: float) -> np.ndarray:
    """LV filling in [0, 1] over the cycle: 1 at end-diastole (phase 0), 0 at end-systole.

    Systole empties smoothly; diastole fills fast first (E wave), pauses, then the atrial
    kick (A wave) tops it up, as a real volume curve does.
    """
    phase = np.mod(phase, 1.0)
    out = np.empty_like(phase, dtype=np.float64)
    sys = phase < systole
    out[sys] = 1.0 - _smoothstep(phase[sys] / systole)
    psi = (phase[~sys] - systole) / (1.0 - systole)
    out[~sys] = 0.78 * _smoothstep(psi / 0.45) + 0.22 * _smoothstep((psi - 0.78) / 0.22)
    return out


@dataclass(frozen=True)
class Timing:
    """Where the cardiac cycle falls on a clip's frames."""

    period: float  # frames per beat
    systole: float  # share of the beat in systole, rounded so that ES falls on a frame
    ed_frame: int
    es_frame: int

    def phase(self, frames: int) -> np.ndarray:
        """Cycle phase of each frame: 0 at end-diastole (ECG R wave), ``systole`` at end-systole."""
        return np.mod((np.arange(frames) - self.ed_frame) / self.period, 1.0)


def clip_timing(heart_rate: float, fps: float, frames: int, rng: np.random.Generator) -> Timing:
    """Place a beat on the clip so that end-diastole and end-systole fall exactly on frames.

    The ED frame is random within the first beat; the systolic share is rounded to a whole
    number of frames so that the volumes at the ED and ES frames are exactly EDV and ESV.
    """
    period = fps * 60.0 / heart_rate
    n_sys = max(1, int(round(systolic_fraction(heart_rate) * period)))
    if frames < n_sys + 1:
        from echoclip.errors import DataError

        raise DataError(
            f"a clip of {frames} frames at {fps:g} fps cannot hold a systole of {n_sys + 1} frames "
            f"(heart rate {heart_rate:.0f} bpm): use more frames"
        )
    last_start = min(int(period), frames - n_sys - 1)
    ed = int(rng.integers(0, last_start + 1))
    return Timing(period=period, systole=n_sys / period, ed_frame=ed, es_frame=ed + n_sys)


def make_patient(seed: int) -> Patient:
    """A patient drawn from an adult echo-lab population (most EFs normal, a third reduced)."""
    rng = rng_for(seed, TAG_PATIENT)
    sex = "F" if rng.random() < 0.45 else "M"
    bsa = float(np.clip(rng.normal(1.78 if sex == "F" else 2.02, 0.18), 1.35, 2.6))
    u = rng.random()
    if u < 0.62:
        ef = rng.normal(60.0, 5.0)
    elif u < 0.68:
        ef = rng.uniform(68.0, 80.0)
    elif u < 0.80:
        ef = rng.uniform(40.0, 52.0)
    elif u < 0.90:
        ef = rng.uniform(28.0, 42.0)
    else:
        ef = rng.uniform(15.0, 30.0)
    ef = float(np.clip(ef, *EF_RANGE))
    upper = EDV_UPPER_NORMAL[sex]
    p_dilated = 0.06 if ef >= 50 else (0.35 if ef >= 35 else 0.65)
    if rng.random() < p_dilated:
        edv = upper * rng.uniform(1.08, 1.75)
    else:
        edv = rng.normal(0.72 * upper, 0.11 * upper) * (bsa / (1.78 if sex == "F" else 2.02))
        edv = min(edv, 0.96 * upper)
    edv = float(np.clip(edv, *EDV_RANGE))
    wall_normal = WALL_UPPER_NORMAL[sex]
    if rng.random() < 0.16:
        wall = wall_normal + rng.uniform(0.15, 0.9)
    else:
        wall = rng.uniform(0.7, wall_normal - 0.03)
    rv_scale = rng.uniform(1.25, 1.7) if rng.random() < 0.11 else rng.uniform(0.85, 1.12)
    p_la = 0.18 if ef >= 50 else 0.5
    la_index = rng.uniform(36.0, 62.0) if rng.random() < p_la else rng.uniform(18.0, 33.0)
    onset: dict[str, int] = {}
    for device, (p_first, p_later) in _DEVICE_ONSET.items():
        if rng.random() < p_first:
            onset[device] = 0
        elif rng.random() < p_later:
            onset[device] = int(rng.integers(1, 5))
    surgical_position = "mitral" if rng.random() < 0.45 else "aortic"
    # A clip and a surgical valve in the same place, or a TAVR inside a surgical aortic
    # valve, are left out: the first device implanted stays.
    if "surgical_valve" in onset:
        rival = "mitraclip" if surgical_position == "mitral" else "tavr"
        if rival in onset:
            del onset[rival if onset[rival] >= onset["surgical_valve"] else "surgical_valve"]
    if "mitraclip" in onset:
        la_index = max(la_index, float(rng.uniform(40.0, 60.0)))
    return Patient(
        patient_id=short_id("P", seed),
        seed=int(seed),
        sex=sex,
        bsa=round(bsa, 2),
        base_ef=ef,
        base_edv=edv,
        lv_shape=float(rng.uniform(3.0, 3.7)),
        wall_cm=float(wall),
        rv_scale=float(rv_scale),
        la_index=float(la_index),
        heart_rate=float(np.clip(rng.normal(74.0, 11.0), 55.0, 105.0)),
        image_quality=float(rng.beta(4.0, 2.0)),
        surgical_position=surgical_position,
        device_onset=onset,
    )


def _ef_course(patient: Patient, visits: int) -> list[float]:
    """EF at each visit: a slow random walk with rare large events (infarct, recovery)."""
    rng = rng_for(patient.seed, TAG_PATIENT, 1)
    efs = [patient.base_ef]
    for _ in range(visits):
        step = rng.normal(0.0, 2.5)
        if rng.random() < 0.08:
            step += rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 18.0)
        efs.append(float(np.clip(efs[-1] + step, *EF_RANGE)))
    return efs


def _severity(value: float, moderate: float, severe: float) -> str:
    """Grade an abnormal value: mild below ``moderate``, severe from ``severe`` on."""
    if value >= severe:
        return "severe"
    if value >= moderate:
        return "moderate"
    return "mild"


def cardiac_state(patient: Patient, visit: int, study_seed: int) -> CardiacState:
    """The patient's heart at ``visit`` (0 = first study), with day-to-day variation from ``study_seed``."""
    rng = rng_for(study_seed, TAG_STUDY)
    course = _ef_course(patient, visit)
    ef = course[visit]
    prior = course[visit - 1] if visit > 0 else None
    devices = [d for d in DEVICES if d in patient.device_onset and patient.device_onset[d] <= visit]
    # Impella is temporary support in cardiogenic shock: present on some studies of sick hearts.
    if rng.random() < _IMPELLA_PER_STUDY:
        devices.append("impella")
        ef = float(rng.uniform(15.0, 32.0))
    ef = float(np.clip(ef + rng.normal(0.0, 1.0), *EF_RANGE))
    # The LV remodels with its function: a falling EF dilates it.
    edv = patient.base_edv * (1.0 + 0.012 * max(0.0, patient.base_ef - ef)) * rng.uniform(0.96, 1.04)
    edv = float(np.clip(edv, *EDV_RANGE))
    esv = edv * (1.0 - ef / 100.0)
    heart_rate = float(
        np.clip(
            patient.heart_rate + rng.normal(0.0, 6.0) + (12.0 if "impella" in devices else 0.0), *HR_RANGE
        )
    )
    effusion = float(rng.uniform(0.4, 2.2)) if rng.random() < 0.09 else 0.0

    findings: list[str] = []
    severity: dict[str, str] = {}
    upper = EDV_UPPER_NORMAL[patient.sex]
    if edv > upper:
        findings.append("lv_dilation")
        severity["lv_dilation"] = _severity(edv / upper, 1.25, 1.5)
    if patient.rv_scale > RV_SCALE_DILATED:
        findings.append("rv_dilation")
        severity["rv_dilation"] = _severity(patient.rv_scale, 1.4, 1.55)
    la_index = patient.la_index * rng.uniform(0.97, 1.03)
    if la_index > LA_INDEX_UPPER_NORMAL:
        findings.append("la_enlargement")
        severity["la_enlargement"] = _severity(la_index, 42.0, 49.0)
    if effusion >= EFFUSION_MIN_CM:
        findings.append("pericardial_effusion")
        severity["pericardial_effusion"] = _severity(effusion, 1.0, 2.0)
    wall_upper = WALL_UPPER_NORMAL[patient.sex]
    if patient.wall_cm > wall_upper:
        findings.append("lv_hypertrophy")
        severity["lv_hypertrophy"] = _severity(patient.wall_cm - wall_upper, 0.35, 0.65)

    return CardiacState(
        patient_id=patient.patient_id,
        study_id=short_id("S", study_seed),
        visit=int(visit),
        sex=patient.sex,
        bsa=patient.bsa,
        ef=round(ef, 2),
        edv=round(edv, 2),
        esv=round(esv, 2),
        heart_rate=round(heart_rate, 1),
        lv_shape=patient.lv_shape,
        wall_cm=patient.wall_cm,
        rv_scale=patient.rv_scale,
        la_index=float(la_index),
        effusion_cm=effusion,
        devices=tuple(d for d in DEVICES if d in devices),
        findings=tuple(f for f in FINDINGS if f in findings),
        severity=severity,
        surgical_position=patient.surgical_position,
        image_quality=patient.image_quality,
        prior_ef=None if prior is None else round(prior, 2),
        rvsp=float(rng.uniform(22.0, 34.0) + (18.0 if patient.rv_scale > RV_SCALE_DILATED else 0.0)),
        tapse=float(rng.uniform(1.8, 2.6) * (0.7 if patient.rv_scale > 1.4 else 1.0)),
        aortic_root=float(rng.uniform(2.7, 3.6) * (1.05 if patient.sex == "M" else 0.95)),
    )


def with_findings(state: CardiacState, findings: Sequence[str]) -> CardiacState:
    """``state`` with exactly ``findings`` present, all else equal: to see what a finding changes.

    A finding added gets a moderate grade (the anatomy that renders it is set to a
    moderate value); one taken away gets a typical normal value; the others keep theirs.

    Example::

        >>> wet = with_findings(state, (*state.findings, "pericardial_effusion"))  # doctest: +SKIP
    """
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        from echoclip.errors import DataError

        raise DataError(f"unknown findings {unknown}; known: {', '.join(FINDINGS)}")
    changes: dict[str, float] = {}
    severity = dict(state.severity)
    for finding in FINDINGS:
        present = finding in findings
        if present == (finding in state.findings):
            continue
        changes.update(_finding_anatomy(state, finding, present))
        if present:
            severity[finding] = "moderate"
        else:
            severity.pop(finding, None)
    return replace(state, **changes, findings=tuple(f for f in FINDINGS if f in findings), severity=severity)


def _finding_anatomy(state: CardiacState, finding: str, present: bool) -> dict[str, float]:
    """The state's fields that make ``finding`` present (moderate) or absent (normal)."""
    if finding == "lv_dilation":
        edv = EDV_UPPER_NORMAL[state.sex] * (1.35 if present else 0.75)
        return {"edv": round(edv, 2), "esv": round(edv * (1.0 - state.ef / 100.0), 2)}
    if finding == "rv_dilation":
        return {"rv_scale": 1.45 if present else 1.0}
    if finding == "la_enlargement":
        return {"la_index": 45.0 if present else 26.0}
    if finding == "pericardial_effusion":
        return {"effusion_cm": 1.4 if present else 0.0}
    wall_upper = WALL_UPPER_NORMAL[state.sex]  # lv_hypertrophy
    return {"wall_cm": wall_upper + 0.45 if present else wall_upper - 0.15}


def ef_from_volumes(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv


# Variance along the axis of a uniform half ellipse of length c, over c²: 1/4 - 16/(9·π²).
_HALF_ELLIPSE_AXIAL_VARIANCE = 0.25 - 16.0 / (9.0 * math.pi**2)


def lv_volume_from_mask(mask: np.ndarray, view: str, cm_per_px: float = 1.0) -> float:
    """LV volume (in units of ``cm_per_px``³) from a cavity mask.

    Long-axis views (A4C, A2C, PLAX): the single-plane area-length formula
    ``V = 8·A²/(3·π·L)``, ``A`` the mask's area and ``L`` its length from apex to the
    mitral plane. ``L`` comes from the spread of the mask along its principal axis (for
    a half ellipse of length ``L`` the variance is ``L²·(1/4 - 16/(9·π²))``), which is
    steadier on a pixel grid than the distance between two extreme pixels. PSAX has no
    length: the volume follows from the area by the simulator's law
    ``V ∝ A**(1/(1-LONG_AXIS_EXPONENT))``, up to a constant that cancels in an EF.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) < 5:
        raise ValueError("the LV mask is empty")
    area = len(ys) * cm_per_px**2
    if view == "PSAX":
        return float(area ** (1.0 / (1.0 - LONG_AXIS_EXPONENT)))
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    points -= points.mean(axis=0)
    axis = np.linalg.eigh(np.cov(points.T))[1][:, -1]
    along = points @ axis
    # remove the pixel's own spread (1/12) before scaling to the half ellipse
    length = math.sqrt(max(along.var() - 1.0 / 12.0, 1e-12) / _HALF_ELLIPSE_AXIAL_VARIANCE) * cm_per_px
    return float(8.0 * area**2 / (3.0 * math.pi * length))


def ef_from_masks(mask_ed: np.ndarray, mask_es: np.ndarray, view: str) -> float:
    """EF (percent) from the LV cavity masks at end-diastole and end-systole."""
    ved = lv_volume_from_mask(mask_ed, view)
    ves = lv_volume_from_mask(mask_es, view)
    return ef_from_volumes(ved, ves)
