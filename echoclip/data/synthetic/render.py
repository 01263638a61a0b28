"""Rendering a :class:`CardiacState` as a B-mode echo clip.

Chambers, walls, valves and devices are shapes in centimetres (transducer at the
origin, depth ``z`` downwards); each frame paints them, back to front, as
echogenicities (blood dark, myocardium grey, pericardium and devices bright) on a
pixel grid, then multiplies by speckle (Rayleigh, drawn on the beam grid so its grains
widen with depth, correlated from frame to frame) and by depth and beam-edge gain.
Everything runs on whole ``[T, h, w]`` blocks: no per-pixel Python.

The fan is the only part of the frame with ultrasound; the ECG trace and the frame
rate / depth / heart-rate labels are burnt in outside it, as a scanner does.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from echoclip.data.synthetic import acquisition as acquisition_mod
from echoclip.data.synthetic.anatomy import CardiacState, Timing, clip_timing, lv_axes, lv_fill
from echoclip.data.synthetic.overlay import burn_in
from echoclip.data.synthetic.realism import AcquisitionRealism
from echoclip.registry import Registry

__all__ = [
    "Sector",
    "Rendered",
    "render_view",
    "sector_for",
    "visible_devices",
    "visible_findings",
    "device_region",
    "DEVICE_VIEWS",
    "FINDING_VIEWS",
    "DEVICE_REGIONS",
]

HALF_ANGLE = math.radians(40.0)

# Echogenicity of each tissue before speckle and gain (1.0 is about full white).
BACKGROUND, CHEST_WALL, ENVELOPE, MYOCARDIUM, ATRIAL_WALL = 0.09, 0.42, 0.2, 0.42, 0.27
PERICARDIUM, BLOOD, EFFUSION, VALVE, DEVICE = 0.9, 0.03, 0.012, 0.7, 2.2
# Tissue texture (relative amplitude of a coarse field); how much a wall along the beam
# fades; the gradient energy (per (1.5 mm)²) above which a pixel counts as a boundary.
TEXTURE, SPECULAR, STRUCTURE_SCALE = 0.35, 0.85, 2e-3
BLOOD_SPARSITY = 3.0
# The grey map: the knee of the compression and its power (see _grey_map).
GREY_KNEE, GREY_GAMMA = 1.6, 1.15

# Where each device shows (it is out of plane elsewhere) and the regions it must fall in.
DEVICE_VIEWS: dict[str, tuple[str, ...]] = {
    "pacemaker": ("A4C", "PLAX", "PSAX"),
    "tavr": ("A4C", "PLAX"),
    "surgical_valve": ("A4C", "A2C", "PLAX"),
    "mitraclip": ("A4C", "A2C", "PLAX"),
    "impella": ("A4C", "A2C", "PLAX", "PSAX"),
}
DEVICE_REGIONS: dict[str, tuple[str, ...]] = {
    "pacemaker": ("rv", "ra", "tricuspid_valve"),
    "tavr": ("aortic_valve",),
    "surgical_valve": ("mitral_valve", "aortic_valve"),  # narrowed by the valve's position
    "mitraclip": ("mitral_valve",),
    "impella": ("lv", "aortic_valve", "aorta"),
}


# Where each finding shows: the views whose scene draws the anatomy it changes. The
# two-chamber cut has no right heart; the short axis (mid-ventricle) has no left atrium.
# A study's report describes what its views show together, so a finding one video
# cannot show is still the truth of the study.
FINDING_VIEWS: dict[str, tuple[str, ...]] = {
    "lv_dilation": ("A4C", "A2C", "PLAX", "PSAX"),
    "rv_dilation": ("A4C", "PLAX", "PSAX"),  # PLAX: the RV outflow in front of the LV
    "la_enlargement": ("A4C", "A2C", "PLAX"),
    "pericardial_effusion": ("A4C", "A2C", "PLAX", "PSAX"),
    "lv_hypertrophy": ("A4C", "A2C", "PLAX", "PSAX"),
}


def visible_findings(state: CardiacState, view: str) -> tuple[str, ...]:
    """The study's findings that ``view`` shows (RV dilation is not in A2C, LA enlargement not in PSAX)."""
    return tuple(f for f in state.findings if view in FINDING_VIEWS[f])


def visible_devices(state: CardiacState, view: str) -> tuple[str, ...]:
    """The study's devices that ``view`` cuts through (a surgical aortic valve is not in A2C)."""
    out = [d for d in state.devices if view in DEVICE_VIEWS[d]]
    if view == "A2C" and state.surgical_position == "aortic" and "surgical_valve" in out:
        out.remove("surgical_valve")
    return tuple(out)


def device_region(
    regions: dict[str, np.ndarray], device: str, surgical_position: str = "mitral"
) -> np.ndarray:
    """The pixels (at end-diastole) where ``device`` belongs, from a study's region masks."""
    names = DEVICE_REGIONS[device]
    if device == "surgical_valve":
        names = (f"{surgical_position}_valve",)
    shape = next(iter(regions.values())).shape
    out = np.zeros(shape, dtype=bool)
    for name in names:
        if name in regions:
            out |= regions[name]
    return out


# ---------------------------------------------------------------------------------------
# the fan


@dataclass(frozen=True)
class Sector:
    """The fan-shaped field of view in pixels: apex near the top centre, opening downwards."""

    size: int
    apex_row: float
    apex_col: float
    radius: float
    half_angle: float

    def mask(self) -> np.ndarray:
        return _sector_mask(self)

    def as_meta(self) -> dict[str, float]:
        return {
            "apex_row": self.apex_row,
            "apex_col": self.apex_col,
            "radius_px": self.radius,
            "half_angle_deg": math.degrees(self.half_angle),
        }


def sector_for(size: int, half_angle: float = HALF_ANGLE) -> Sector:
    """The fan of a ``size``×``size`` frame (``half_angle`` in radians); the strip below its arc holds the ECG."""
    return Sector(size, apex_row=1.0, apex_col=(size - 1) / 2.0, radius=0.87 * size, half_angle=half_angle)


@lru_cache(maxsize=8)
def _sector_mask(sector: Sector) -> np.ndarray:
    r, theta = _polar(sector)
    mask = (r <= sector.radius) & (np.abs(theta) <= sector.half_angle)
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=8)
def _polar(sector: Sector) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(sector.size, dtype=np.float32)[:, None] - sector.apex_row
    cols = np.arange(sector.size, dtype=np.float32)[None, :] - sector.apex_col
    r = np.hypot(rows, cols)
    theta = np.arctan2(cols, rows)
    r.flags.writeable = False
    theta.flags.writeable = False
    return r, theta


# ---------------------------------------------------------------------------------------
# shapes in centimetres; parameters are per-frame arrays [T] (or scalars)


def _t(v: np.ndarray | float) -> np.ndarray:
    """A parameter as a [T,1,1] (or [1,1,1]) float32 array for broadcasting over blocks."""
    return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)


def _vec(x: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
    """Points or directions as an array [..., 2] (x lateral, z depth)."""
    return np.stack(np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(z, np.float64)), axis=-1)


def _perp(u: np.ndarray) -> np.ndarray:
    """``u`` turned a quarter: for ``u`` pointing down the screen, the result points right."""
    return _vec(u[..., 1], -u[..., 0])


def _rotate(u: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return _vec(
        u[..., 0] * math.cos(a) - u[..., 1] * math.sin(a), u[..., 0] * math.sin(a) + u[..., 1] * math.cos(a)
    )


def _unit(angle_from_down_deg: float) -> np.ndarray:
    a = math.radians(angle_from_down_deg)
    return _vec(math.sin(a), math.cos(a))


@dataclass
class Ellipse:
    """An ellipse (semi-axis ``c`` along ``axis``, ``a`` across); ``half`` keeps the side behind its centre."""

    center: np.ndarray  # [T,2] or [2]
    axis: np.ndarray  # unit [T,2] or [2]
    a: np.ndarray | float
    c: np.ndarray | float
    half: bool = False
    # a boundary that is not an ellipse: (harmonic k, relative amplitude, phase) terms
    # of the radius around the centre (an atrium is no circle)
    wobble: tuple[tuple[int, float, float], ...] = ()

    def _radius(self, p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
        """The boundary's radius (1 for an ellipse) at the angle of each point."""
        if not self.wobble:
            return 1.0
        phi = np.arctan2(q, p)
        out = np.ones_like(phi)
        for k, amplitude, phase in self.wobble:
            out += np.float32(amplitude) * np.cos(k * phi + np.float32(phase))
        return out

    def extent(self) -> tuple[float, float, float, float]:
        """Bounding box ``(x0, x1, z0, z1)`` over all frames (of the kept half for a half ellipse)."""
        cx, cz = np.asarray(self.center)[..., 0], np.asarray(self.center)[..., 1]
        ux, uz = np.asarray(self.axis)[..., 0], np.asarray(self.axis)[..., 1]
        a, c = np.asarray(self.a), np.asarray(self.c)
        hx = np.sqrt((c * ux) ** 2 + (a * uz) ** 2)
        hz = np.sqrt((c * uz) ** 2 + (a * ux) ** 2)
        if not self.half:
            return (
                float(np.min(cx - hx)),
                float(np.max(cx + hx)),
                float(np.min(cz - hz)),
                float(np.max(cz + hz)),
            )
        # The kept half (behind the centre along the axis) reaches the full extent only on
        # the side the axis points away from; elsewhere its end is the cut's end point.
        cut_x, cut_z = np.abs(a * uz), np.abs(a * ux)
        x0 = cx - np.where(ux >= 0, hx, cut_x)
        x1 = cx + np.where(ux <= 0, hx, cut_x)
        z0 = cz - np.where(uz >= 0, hz, cut_z)
        z1 = cz + np.where(uz <= 0, hz, cut_z)
        return float(np.min(x0)), float(np.max(x1)), float(np.min(z0)), float(np.max(z1))

    def _pq(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center)
        u = np.asarray(self.axis)
        dx, dz = x - _t(c[..., 0]), z - _t(c[..., 1])
        ux, uz = _t(u[..., 0]), _t(u[..., 1])
        return dx * ux + dz * uz, dx * uz - dz * ux

    def coverage(self, x: np.ndarray, z: np.ndarray, edge: float) -> np.ndarray:
        """Soft membership in [0, 1] over a block ``[T, h, w]``; the edge is ``edge`` cm wide.

        Costly steps run on the small ``[T,1,w]`` and ``[T,h,1]`` factors; the distance
        to the boundary is taken to first order in ``ρ² - 1``, exact where it matters.
        """
        center, u = np.asarray(self.center), np.asarray(self.axis)
        a, c = _t(self.a), _t(self.c)
        ux, uz = _t(u[..., 0]), _t(u[..., 1])
        dx, dz = x - _t(center[..., 0]), z - _t(center[..., 1])
        p = dx * (ux / c) + dz * (uz / c)  # along the axis, in units of c
        q = dx * (uz / a) - dz * (ux / a)
        cov = p * p
        cov += q * q
        if self.wobble:
            cov /= self._radius(p, q) ** 2
        cov -= 1.0
        cov *= -np.minimum(a, c) / (2.0 * edge)
        cov += 0.5
        np.clip(cov, 0.0, 1.0, out=cov)
        if self.half:
            p *= -c / edge
            p += 0.5
            np.clip(p, 0.0, 1.0, out=p)
            cov *= p
        return cov

    def is_static(self) -> bool:
        return (
            np.ndim(self.center) == 1
            and np.ndim(self.axis) == 1
            and np.ndim(self.a) == 0
            and np.ndim(self.c) == 0
        )

    def grown(self, margin: float) -> Ellipse:
        """The ellipse at its mean position and size over the clip, ``margin`` cm larger all round."""
        center = np.asarray(self.center, dtype=np.float64)
        axis = np.asarray(self.axis, dtype=np.float64)
        center = center.mean(axis=0) if center.ndim == 2 else center
        axis = axis.mean(axis=0) if axis.ndim == 2 else axis
        axis = axis / np.linalg.norm(axis)
        return Ellipse(
            center,
            axis,
            float(np.mean(self.a)) + margin,
            float(np.mean(self.c)) + margin,
            self.half,
            self.wobble,
        )

    def mask(self, x: np.ndarray, z: np.ndarray, frame: int) -> np.ndarray:
        """Pixels inside at one frame (``x``, ``z`` 2-D grids)."""
        one = _at_frame(self, frame)
        p, q = one._pq(x[None], z[None])
        p, q = p / _t(one.c), q / _t(one.a)
        inside = p**2 + q**2 < np.asarray(self._radius(p, q)) ** 2
        if self.half:
            inside &= p <= 0.0
        return inside[0]


@dataclass
class Capsule:
    """A thick segment from ``p0`` to ``p1`` (a lead, a leaflet, a catheter wall)."""

    p0: np.ndarray
    p1: np.ndarray
    radius: float

    def extent(self) -> tuple[float, float, float, float]:
        xs = np.concatenate([np.ravel(np.asarray(self.p0)[..., 0]), np.ravel(np.asarray(self.p1)[..., 0])])
        zs = np.concatenate([np.ravel(np.asarray(self.p0)[..., 1]), np.ravel(np.asarray(self.p1)[..., 1])])
        r = self.radius
        return float(xs.min() - r), float(xs.max() + r), float(zs.min() - r), float(zs.max() + r)

    def coverage(self, x: np.ndarray, z: np.ndarray, edge: float) -> np.ndarray:
        p0, p1 = np.asarray(self.p0), np.asarray(self.p1)
        x0, z0 = _t(p0[..., 0]), _t(p0[..., 1])
        vx, vz = _t(p1[..., 0] - p0[..., 0]), _t(p1[..., 1] - p0[..., 1])
        length2 = np.maximum(vx * vx + vz * vz, 1e-6)
        s = np.clip(((x - x0) * vx + (z - z0) * vz) / length2, 0.0, 1.0)
        d = np.hypot(x - x0 - s * vx, z - z0 - s * vz)
        return np.clip(0.5 - (d - self.radius) / edge, 0.0, 1.0)

    def is_static(self) -> bool:
        return np.ndim(self.p0) == 1 and np.ndim(self.p1) == 1


Shape = Ellipse | Capsule


def _at_frame(shape: Ellipse, frame: int) -> Ellipse:
    """The ellipse at one frame (per-frame parameters: centre/axis [T,2], semi-axes [T])."""

    def point(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        return v[frame] if v.ndim == 2 else v

    def scalar(v: np.ndarray | float) -> float:
        v = np.asarray(v)
        return float(v[frame]) if v.ndim == 1 else float(v)

    return Ellipse(
        point(shape.center), point(shape.axis), scalar(shape.a), scalar(shape.c), shape.half, shape.wobble
    )


# ---------------------------------------------------------------------------------------
# the heart in motion


@dataclass
class Motion:
    """Per-frame LV size and valve state."""

    volume: np.ndarray
    fill: np.ndarray  # 1 at end-diastole, 0 at end-systole
    a: np.ndarray
    c: np.ndarray
    wall: np.ndarray
    mitral_open: np.ndarray  # 0 closed .. 1 wide open (diastolic filling)
    aortic_open: np.ndarray  # 0 closed .. 1 open (systolic ejection)


def heart_motion(state: CardiacState, timing: Timing, frames: int) -> Motion:
    phase = timing.phase(frames)
    fill = lv_fill(phase, timing.systole)
    volume = state.esv + (state.edv - state.esv) * fill
    a, c = lv_axes(volume, state.edv, state.lv_shape)
    wall = _wall_thickness(a, c, volume, state)
    rate = lv_fill(phase + 0.01, timing.systole) - lv_fill(phase - 0.01, timing.systole)
    peak = max(float(np.abs(rate).max()), 1e-6)
    mitral_open = np.sqrt(np.clip(rate / peak * 2.5, 0.0, 1.0))
    aortic_open = np.sqrt(np.clip(-rate / peak * 2.5, 0.0, 1.0))
    return Motion(volume, fill, a, c, wall, mitral_open, aortic_open)


def _wall_thickness(a: np.ndarray, c: np.ndarray, volume: np.ndarray, state: CardiacState) -> np.ndarray:
    """Wall thickness over the cycle with constant myocardial volume: it thickens in systole."""
    a_ed, c_ed = lv_axes(state.edv, state.edv, state.lv_shape)
    w0 = state.wall_cm
    target = (a_ed + w0) ** 2 * (c_ed + w0) - (a_ed**2) * c_ed + a**2 * c
    w = np.full_like(a, w0)
    for _ in range(6):  # Newton on (a+w)²(c+w) = target
        f = (a + w) ** 2 * (c + w) - target
        df = 2 * (a + w) * (c + w) + (a + w) ** 2
        w = w - f / df
    return w


# ---------------------------------------------------------------------------------------
# scenes: what to paint, per view


@dataclass
class Scene:
    layers: list[tuple[Shape, float]]
    lv: Ellipse
    regions: dict[str, Ellipse]
    devices: dict[str, list[tuple[Shape, float]]]
    shadows: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (centre [T,2], half width cm)
    bottom: float = 12.0  # deepest structure (cm): sets the depth


@dataclass(frozen=True)
class Pose:
    """Where the probe caught the heart this time: small tilt and shift, chest wall depth."""

    tilt: float
    dx: float
    dz: float
    chest: float


def _atrium(
    annulus: np.ndarray,
    axis: np.ndarray,
    width: float,
    length_max: float,
    gap: float = 0.25,
    wobble: tuple[tuple[int, float, float], ...] = (),
) -> Ellipse:
    """An atrium hanging from a moving annulus with a fixed roof: it lengthens as the annulus descends."""
    span = np.linalg.norm(annulus - annulus[int(np.argmin(_along(annulus, axis)))], axis=-1)
    b = (length_max - span) / 2.0
    center = annulus + axis * (gap + b)[:, None]
    return Ellipse(center, axis, width, b, wobble=wobble)


def _irregular(key: str, amplitude: float = 0.16) -> tuple[tuple[int, float, float], ...]:
    """A patient's own chamber outline: a few low harmonics, the same in every study."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return tuple(
        (k, float(amplitude * rng.uniform(0.4, 1.0) / (k - 1)), float(rng.uniform(0, 2 * math.pi)))
        for k in (2, 3, 4)
    )


def _along(points: np.ndarray, axis: np.ndarray) -> np.ndarray:
    return points @ np.asarray(axis).reshape(2)


def _leaflets(
    hinge_a: np.ndarray,
    hinge_b: np.ndarray,
    into: np.ndarray,
    opening: np.ndarray,
    length: float,
    coapt: float,
) -> list[Shape]:
    """Two leaflets: closed they meet ``coapt`` cm beyond the annulus centre; open they swing ``into`` the chamber."""
    centre = (hinge_a + hinge_b) / 2.0
    closed = centre + into * coapt
    o = opening[:, None]
    out: list[Shape] = []
    for hinge, other in ((hinge_a, hinge_b), (hinge_b, hinge_a)):
        inward = (other - hinge) / np.linalg.norm(other - hinge, axis=-1, keepdims=True)
        open_tip = hinge + into * length + inward * 0.25
        out.append(Capsule(hinge, closed * (1 - o) + open_tip * o, 0.1))
    return out


def _shade(layers: list[tuple[Shape, float]], shape: Shape, value: float) -> None:
    layers.append((shape, value))


def _envelope(parts: list[Ellipse], effusion: float) -> tuple[list[tuple[Shape, float]], float]:
    """Pericardium (bright), effusion (dark) and epicardial fat hugging the chambers.

    Each is the union of the chambers' outlines grown by its depth, at their mean
    position (the sac barely moves); returns the layers and the deepest point (cm).
    """
    fat = 0.3
    layers: list[tuple[Shape, float]] = [(p.grown(fat + effusion + 0.25), PERICARDIUM) for p in parts]
    if effusion > 0:
        layers += [(p.grown(fat + effusion), EFFUSION) for p in parts]
    layers += [(p.grown(fat), ENVELOPE) for p in parts]
    bottom = max(p.grown(fat + effusion + 0.25).extent()[3] for p in parts)
    return layers, bottom


def _scene_a4c(state: CardiacState, m: Motion, pose: Pose, apical_2c: bool = False) -> Scene:
    u = _unit(8.0 + pose.tilt if not apical_2c else pose.tilt)
    n = _perp(u)
    a_ed, c_ed = lv_axes(state.edv, state.edv, state.lv_shape)
    # the sonographer keeps the RV in the sector: the larger the RV, the further the heart
    # sits towards the LV's side (a dilated RV grows outward, past the fan's edge otherwise)
    rv_room = 0.0 if apical_2c else 1.65 * (state.rv_scale - 1.0)
    apex = _vec(0.35 + pose.dx + rv_room, pose.chest + 0.4 + state.wall_cm + pose.dz)
    base = apex + u * m.c[:, None]  # mitral plane centre, [T,2]
    lv = Ellipse(base, u, m.a, m.c, half=True)
    lv_epi = Ellipse(base, u, m.a + m.wall, m.c + m.wall, half=True)

    lav = state.la_index * state.bsa
    a_la = (3 * lav / (4 * math.pi * 1.15)) ** (1 / 3)
    u_la = _rotate(u, 4.0)
    la = _atrium(base, u_la, a_la, 2 * 1.15 * a_la + 0.6, wobble=_irregular(f"{state.patient_id}/la"))
    la_wall = Ellipse(la.center, u_la, a_la + 0.22, np.asarray(la.c) + 0.22, wobble=la.wobble)
    mitral_hinges = (base - n * (0.92 * m.a)[:, None], base + n * (0.92 * m.a)[:, None])

    regions: dict[str, Ellipse] = {"lv": lv, "la": la}
    parts = [lv_epi, la_wall]
    chambers_back: list[tuple[Shape, float]] = []
    chambers: list[tuple[Shape, float]] = []
    valves: list[Shape] = []
    devices: dict[str, list[tuple[Shape, float]]] = {}
    shadows: list[tuple[np.ndarray, float]] = []

    if not apical_2c:
        u_rv = _rotate(u, 8.0)
        n_rv = _perp(u_rv)
        a_rv = 1.65 * state.rv_scale * (0.78 + 0.22 * m.fill)
        c_rv = 0.8 * c_ed * (0.92 + 0.08 * m.fill) * min(state.rv_scale, 1.25) ** 0.3
        tv = base - n * (m.a + m.wall + 0.15 + a_rv)[:, None] - u * 0.7
        rv = Ellipse(tv, u_rv, a_rv, c_rv, half=True)
        rv_epi = Ellipse(tv, u_rv, a_rv + 0.35, c_rv + 0.35, half=True)
        a_ra = 1.85 * (1.15 if "rv_dilation" in state.findings else 1.0)
        u_ra = _rotate(u_rv, -10.0)
        ra = _atrium(tv, u_ra, a_ra, 2 * 1.1 * a_ra + 0.5, wobble=_irregular(f"{state.patient_id}/ra"))
        # keep an interatrial septum: push the RA away from the LA when they would touch
        gap = float(np.min(_along(np.asarray(la.center) - np.asarray(ra.center), n)))
        need = a_la + a_ra + 0.35
        if gap < need:
            ra = Ellipse(np.asarray(ra.center) - n * (need - gap), u_ra, ra.a, ra.c, wobble=ra.wobble)
        ra_wall = Ellipse(ra.center, u_ra, a_ra + 0.2, np.asarray(ra.c) + 0.2, wobble=ra.wobble)
        regions.update(rv=rv, ra=ra)
        parts += [rv_epi, ra_wall]
        chambers_back += [(ra_wall, ATRIAL_WALL), (rv_epi, MYOCARDIUM)]
        chambers += [(ra, BLOOD), (rv, BLOOD)]
        tv_hinges = (tv - n_rv * (0.9 * a_rv)[:, None], tv + n_rv * (0.9 * a_rv)[:, None])
        valves += _leaflets(*tv_hinges, -u_rv, m.mitral_open, 1.8, 0.15)
        regions["tricuspid_valve"] = Ellipse(tv, u_rv, a_rv + 0.5, 1.0)
        rv_apex = tv - u_rv * (0.8 * c_rv)[:, None] + n_rv * 0.3
        ra_deep = np.asarray(ra.center) + u_ra * (0.6 * np.asarray(ra.c))[:, None]
        devices["pacemaker"] = [
            (Capsule(ra_deep, tv, 0.1), DEVICE),
            (Capsule(tv, rv_apex, 0.1), DEVICE),
            (Capsule(tv + u_rv * 0.35, rv_apex + u_rv * 0.35, 0.08), 0.7),  # reverberation
        ]
        # a foreshortened (five-chamber-like) cut shows the aortic root at the crux
        aortic = base - n * (0.55 * m.a)[:, None] + u * 0.45
        regions["aortic_valve"] = Ellipse(aortic, u, 1.6, 1.6)
        devices["tavr"] = _tavr(aortic, u, 1.1)
        devices["impella"] = _impella(aortic + u * 1.2, aortic - u * 4.2 + n * 0.6)
        aortic_valve = _mechanical(aortic - n * 1.0, aortic + n * 1.0, u, m.aortic_open)
    else:
        aortic_valve = None

    chambers += [(la, BLOOD)]
    regions["mitral_valve"] = Ellipse(base - u * 0.3, u, m.a + 0.6, 1.7)
    orifice = Ellipse(base + u * 0.15, u, 0.8 * np.minimum(m.a, a_la) * m.mitral_open + 0.01, 0.45)
    mitral_leaflets = _leaflets(*mitral_hinges, -u, m.mitral_open, 1.6 * (a_ed / 2.5) ** 0.5, 0.2)
    devices["mitraclip"] = _mitraclip(*mitral_hinges, -u, m.mitral_open)
    devices["surgical_valve"] = (
        _mechanical(*mitral_hinges, u, m.mitral_open)
        if state.surgical_position == "mitral"
        else (aortic_valve or [])
    )
    if apical_2c:
        devices["impella"] = _impella(base - u * 0.3 - n * (0.3 * m.a)[:, None], base - u * 4.8 + n * 0.3)
    if "surgical_valve" in state.devices:
        hinge = mitral_hinges if state.surgical_position == "mitral" else None
        if hinge is not None:
            shadows.append(((hinge[0] + hinge[1]) / 2, 0.9))
        elif not apical_2c:
            shadows.append((base - n * (0.55 * m.a)[:, None] + u * 0.45, 0.8))
    if "mitraclip" in state.devices or (
        "surgical_valve" in state.devices and state.surgical_position == "mitral"
    ):
        mitral_leaflets = []  # the device takes the leaflets' place in the picture

    envelope, bottom = _envelope(parts, state.effusion_cm)
    layers = (
        envelope + chambers_back + [(la_wall, ATRIAL_WALL)] + chambers + [(lv_epi, MYOCARDIUM), (lv, BLOOD)]
    )
    layers += _papillary_and_trabeculae(base, u, n, m)
    layers += [(orifice, BLOOD)] + [(v, VALVE) for v in valves + mitral_leaflets]
    return Scene(layers, lv, regions, devices, shadows, bottom)


def _papillary_and_trabeculae(
    base: np.ndarray, u: np.ndarray, n: np.ndarray, m: Motion
) -> list[tuple[Shape, float]]:
    """A papillary muscle on the lateral wall and a few trabeculae near the apex, moving with the LV."""
    a, c = m.a[:, None], m.c[:, None]
    papillary = base - u * (0.55 * c) + n * (0.72 * a)
    out: list[tuple[Shape, float]] = [(Ellipse(papillary, u, 0.3, 0.65), MYOCARDIUM * 0.9)]
    for along, across in ((0.82, -0.45), (0.88, 0.3), (0.75, 0.6)):
        root = base - u * (along * c) + n * (across * a)
        out.append((Capsule(root, root + u * (0.35 * c * 0.3) - n * (0.15 * a * np.sign(across)), 0.08), 0.3))
    return out


def _scene_a2c(state: CardiacState, m: Motion, pose: Pose) -> Scene:
    return _scene_a4c(state, m, pose, apical_2c=True)


def _scene_plax(state: CardiacState, m: Motion, pose: Pose) -> Scene:
    u = _rotate(_vec(1.0, 0.0), -15.0 + pose.tilt)  # apex (left, deep) -> base (right, shallow)
    n = _perp(u)  # towards the septum and the transducer
    a_ed, c_ed = lv_axes(state.edv, state.edv, state.lv_shape)
    h_rv = 1.25 * state.rv_scale
    axis_depth = pose.chest + 0.35 + 2 * h_rv + state.wall_cm + a_ed + 0.3 + pose.dz
    base_ed = _vec(0.9 + pose.dx, axis_depth - 0.5 * c_ed * math.sin(math.radians(15.0)))
    apex = base_ed - u * c_ed
    base = apex + u * m.c[:, None]
    lv = Ellipse(base, u, m.a, m.c, half=True)
    lv_epi = Ellipse(base, u, m.a + m.wall, m.c + m.wall, half=True)

    rv_h = h_rv * (0.85 + 0.15 * m.fill)
    # the RV outflow lies in front of the LV outflow, near the base, whatever the LV's length
    rv_len = 0.45 * c_ed
    rv_center = base - u * (0.35 * m.c)[:, None] + n * (m.a + m.wall + rv_h)[:, None]
    rv = Ellipse(rv_center, u, rv_h, rv_len)
    rv_epi = Ellipse(rv_center, u, rv_h + 0.35, rv_len + 0.35)

    r_ao = state.aortic_root / 2
    aortic = base + n * (0.45 * m.a)[:, None]
    u_ao = _rotate(u, -22.0)
    n_ao = _perp(u_ao)
    aorta = Ellipse(aortic + u_ao * 2.4, u_ao, r_ao * 0.95, 2.7)
    aorta_wall = Ellipse(aortic + u_ao * 2.4, u_ao, r_ao * 0.95 + 0.28, 2.75)

    mitral_center = base - n * (0.45 * m.a)[:, None]
    lav = state.la_index * state.bsa
    r_la = 0.85 * (3 * lav / (4 * math.pi * 1.15)) ** (1 / 3)
    u_la = _rotate(u, 10.0)
    la = _atrium(mitral_center, u_la, r_la, 2.2 * r_la + 0.4, wobble=_irregular(f"{state.patient_id}/la"))
    la_wall = Ellipse(la.center, u_la, r_la + 0.22, np.asarray(la.c) + 0.22, wobble=la.wobble)

    desc = base_ed - n * (a_ed + state.wall_cm + state.effusion_cm + 1.6) + u * 0.6
    desc_aorta = [(Ellipse(desc, u, 1.25, 1.25), ATRIAL_WALL), (Ellipse(desc, u, 0.95, 0.95), BLOOD)]

    mitral_hinges = (base - n * (0.05 * m.a)[:, None], base - n * (0.95 * m.a)[:, None])
    aortic_hinges = (aortic - n_ao * r_ao * 0.9, aortic + n_ao * r_ao * 0.9)
    valves = _leaflets(*mitral_hinges, -u, m.mitral_open, 1.6 * (a_ed / 2.5) ** 0.5, 0.2)
    cusps = _leaflets(*aortic_hinges, u_ao, m.aortic_open, 1.3, 0.35)
    regions = {
        "lv": lv,
        "rv": rv,
        "la": la,
        "aorta": aorta,
        "mitral_valve": Ellipse(mitral_center - u * 0.3, u, np.asarray(0.5 * m.a) + 0.6, 1.7),
        "aortic_valve": Ellipse(aortic + u_ao * 0.5, u_ao, r_ao + 0.6, 1.5),
    }
    devices = {
        "pacemaker": [
            (
                Capsule(
                    rv_center - u * (0.7 * rv_len) + n * 0.25, rv_center + u * (0.6 * rv_len) - n * 0.3, 0.1
                ),
                DEVICE,
            )
        ],
        "tavr": _tavr(aortic + u_ao * 0.6, u_ao, r_ao * 0.9),
        "impella": _impella(aortic + u_ao * 2.0, aortic - u * 4.0 - n * 0.5),
        "mitraclip": _mitraclip(*mitral_hinges, -u, m.mitral_open),
        "surgical_valve": (
            _mechanical(*mitral_hinges, u, m.mitral_open)
            if state.surgical_position == "mitral"
            else _mechanical(*aortic_hinges, u_ao, m.aortic_open)
        ),
    }
    shadows = []
    if "surgical_valve" in state.devices:
        hinges = mitral_hinges if state.surgical_position == "mitral" else aortic_hinges
        shadows.append(((hinges[0] + hinges[1]) / 2, 0.8))
    if "mitraclip" in state.devices or (
        "surgical_valve" in state.devices and state.surgical_position == "mitral"
    ):
        valves = []
    if "tavr" in state.devices or ("surgical_valve" in state.devices and state.surgical_position == "aortic"):
        cusps = []
    envelope, bottom = _envelope([lv_epi, rv_epi, la_wall, aorta_wall], state.effusion_cm)
    layers = envelope + desc_aorta + [(rv_epi, MYOCARDIUM), (aorta_wall, ATRIAL_WALL), (la_wall, ATRIAL_WALL)]
    layers += [(rv, BLOOD), (la, BLOOD), (lv_epi, MYOCARDIUM), (aorta, BLOOD), (lv, BLOOD)]
    orifice = Ellipse(mitral_center + u * 0.15, u, 0.45 * m.a * m.mitral_open + 0.01, 0.45)
    layers += [(orifice, BLOOD)] + [(v, VALVE) for v in valves + cusps]
    return Scene(layers, lv, regions, devices, shadows, max(bottom, float(desc[1]) + 1.3))


def _scene_psax(state: CardiacState, m: Motion, pose: Pose) -> Scene:
    a_ed, _ = lv_axes(state.edv, state.edv, state.lv_shape)
    r = 0.87 * m.a
    h_rv = 1.15 * state.rv_scale
    center = _vec(0.3 + pose.dx, pose.chest + 0.35 + 1.5 * h_rv + state.wall_cm + 0.87 * a_ed + 0.3 + pose.dz)
    down = _vec(0.0, 1.0)
    lv = Ellipse(center, down, r, r, half=False)
    lv_epi = Ellipse(center, down, r + m.wall, r + m.wall)
    direction = _rotate(_vec(0.0, -1.0), -38.0 + pose.tilt)  # up and to the left
    tangent = _perp(direction)
    rv_h = h_rv * (0.82 + 0.18 * m.fill)
    rv_center = center + direction * (r + m.wall + 0.45 * rv_h)[:, None]
    rv = Ellipse(rv_center, tangent, rv_h, 2.5 * state.rv_scale**0.7)
    rv_epi = Ellipse(rv_center, tangent, rv_h + 0.35, 2.5 * state.rv_scale**0.7 + 0.35)
    papillary = [
        Ellipse(center + _vec(0.8, 0.6) * (0.62 * r)[:, None], down, 0.38, 0.38),
        Ellipse(center + _vec(-0.8, 0.6) * (0.62 * r)[:, None], down, 0.38, 0.38),
    ]
    envelope, bottom = _envelope([lv_epi, rv_epi], state.effusion_cm)
    layers = envelope + [(rv_epi, MYOCARDIUM), (rv, BLOOD), (lv_epi, MYOCARDIUM), (lv, BLOOD)]
    layers += [(p, MYOCARDIUM) for p in papillary]
    impella_at = center + _vec(0.35, -0.2) * r[:, None]
    devices = {
        "pacemaker": [(Ellipse(rv_center, tangent, 0.22, 0.22), DEVICE)],
        "impella": [
            (Ellipse(impella_at, down, 0.28, 0.28), DEVICE),
            (Ellipse(impella_at, down, 0.11, 0.11), BLOOD),
        ],
    }
    regions = {"lv": lv, "rv": rv}
    return Scene(layers, lv, regions, devices, [], bottom)


# view -> the scene of that cut through the heart
SCENES: Registry[Callable[[CardiacState, Motion, Pose], Scene]] = Registry("view", ValueError)
SCENES["A4C"] = _scene_a4c
SCENES["A2C"] = _scene_a2c
SCENES["PLAX"] = _scene_plax
SCENES["PSAX"] = _scene_psax


# ---------------------------------------------------------------------------------------
# devices as echoes


def _tavr(annulus: np.ndarray, axis: np.ndarray, radius: float) -> list[tuple[Shape, float]]:
    """A stent frame: two bright walls along the root with a lattice between them."""
    n = _perp(axis)
    lo, hi = annulus - axis * 0.7, annulus + axis * 1.2
    parts: list[tuple[Shape, float]] = [
        (Capsule(lo - n * radius, hi - n * radius, 0.12), DEVICE),
        (Capsule(lo + n * radius, hi + n * radius, 0.12), DEVICE),
    ]
    for k in range(3):
        s0 = lo + (hi - lo) * (k / 3)
        s1 = lo + (hi - lo) * ((k + 1) / 3)
        parts.append((Capsule(s0 - n * radius, s1 + n * radius, 0.06), DEVICE * 0.6))
        parts.append((Capsule(s0 + n * radius, s1 - n * radius, 0.06), DEVICE * 0.6))
    return parts


def _mechanical(
    hinge_a: np.ndarray, hinge_b: np.ndarray, axis: np.ndarray, opening: np.ndarray
) -> list[tuple[Shape, float]]:
    """A surgical valve: a dense sewing ring at both hinges and two discs that swing open."""
    parts: list[tuple[Shape, float]] = [
        (Ellipse(h, axis, 0.3, 0.36), DEVICE * 1.2) for h in (hinge_a, hinge_b)
    ]
    n = hinge_b - hinge_a
    half = np.linalg.norm(n, axis=-1, keepdims=True) / 4
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    angle = (np.asarray(opening) * math.radians(75.0))[:, None] if np.ndim(opening) else opening
    direction = n * np.cos(angle) - np.asarray(axis) * np.sin(angle)
    for frac in (0.25, 0.75):
        pivot = hinge_a + (hinge_b - hinge_a) * frac
        parts.append((Capsule(pivot - direction * half, pivot + direction * half, 0.09), DEVICE))
    return parts


def _mitraclip(
    hinge_a: np.ndarray, hinge_b: np.ndarray, into: np.ndarray, opening: np.ndarray
) -> list[tuple[Shape, float]]:
    """The clip: a bright mass holding the leaflet tips together; the leaflets tether to it."""
    centre = (hinge_a + hinge_b) / 2.0
    clip_at = centre + into * (0.5 + 0.5 * np.asarray(opening))[:, None]
    return [
        (Capsule(hinge_a, clip_at, 0.1), VALVE),
        (Capsule(hinge_b, clip_at, 0.1), VALVE),
        (Ellipse(clip_at, into, 0.32, 0.55), DEVICE),
    ]


def _impella(outlet: np.ndarray, inlet: np.ndarray) -> list[tuple[Shape, float]]:
    """A catheter across the aortic valve: a bright tube (double line) with a pigtail at the tip."""
    return [
        (Capsule(outlet, inlet, 0.24), DEVICE),
        (Capsule(outlet, inlet, 0.09), BLOOD),
        (Ellipse(inlet, _vec(0.0, 1.0), 0.42, 0.42), DEVICE * 0.8),
        (Ellipse(inlet, _vec(0.0, 1.0), 0.28, 0.28), BLOOD),
    ]


# ---------------------------------------------------------------------------------------
# pixels


@dataclass
class Rendered:
    frames: np.ndarray  # uint8 [T,H,W,3]
    timing: Timing
    depth_cm: float
    cm_per_px: float
    sector: Sector
    lv_mask_ed: np.ndarray
    lv_mask_es: np.ndarray
    regions: dict[str, np.ndarray]  # bool [H,W] at end-diastole
    tracings: list[tuple[float, float, float, float, int]]  # EchoNet-Dynamic rows (x1, y1, x2, y2, frame)
    lv_volumes: np.ndarray  # mL per frame
    fps: float = 0.0  # the clip's frame rate (the acquisition may change the one asked for)
    cm_per_px_x: float = 0.0  # across; differs from cm_per_px (down) on a dual screen
    acquisition: acquisition_mod.Acquired = field(default_factory=acquisition_mod.Acquired)


@lru_cache(maxsize=8)
def _fan_pixels(sector: Sector) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat indices of the fan's pixels, and of each one's cell on the beam grid.

    Speckle is drawn on the beam grid (one cell per depth sample and beam line) so that
    its grains follow the beams and widen with depth, as a phased array's do.
    """
    r, theta = _polar(sector)
    mask = sector.mask().ravel()
    n_r = int(sector.radius) + 2
    n_t = max(8, int(0.5 * sector.size))
    ir = np.clip(np.rint(r), 0, n_r - 1).astype(np.intp)
    it = np.clip(np.rint((theta / sector.half_angle + 1) / 2 * (n_t - 1)), 0, n_t - 1).astype(np.intp)
    pixels = np.flatnonzero(mask)
    cells = (ir * n_t + it).ravel()[pixels]
    return pixels, cells, n_r * n_t


def _speckle(sector: Sector, frames: int, rng: np.random.Generator, step: int = 3) -> np.ndarray:
    """Speckle ``[T, P]`` over the fan's pixels, mean 1, evolving smoothly from frame to frame.

    Complex Gaussian fields are drawn every ``step`` frames and blended in between (at
    constant variance), so the pattern decorrelates over a few frames as moving tissue
    does. The Rayleigh envelope is blended with its mean: log compression on a scanner
    narrows its spread in the same way.
    """
    pixels, cells, n_cells = _fan_pixels(sector)
    keys = rng.standard_normal(((frames - 1) // step + 2, 2, n_cells), dtype=np.float32)
    k, w = np.divmod(np.arange(frames), step)
    w = w / step
    norm = 1.0 / np.sqrt((1 - w) ** 2 + w**2)
    field = keys[k] * ((1 - w) * norm).astype(np.float32)[:, None, None]
    field += keys[k + 1] * (w * norm).astype(np.float32)[:, None, None]
    field *= field
    amplitude = field[:, 0]
    amplitude += field[:, 1]
    np.sqrt(amplitude, out=amplitude)  # Rayleigh, E[A] = sqrt(pi/2)
    amplitude *= np.float32(0.7 / math.sqrt(math.pi / 2))
    amplitude += np.float32(0.3)
    return amplitude[:, cells]


def _smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [-1, 1] (tissue texture outside the heart)."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    rows = np.linspace(0, cells, shape[0], dtype=np.float32)
    cols = np.linspace(0, cells, shape[1], dtype=np.float32)
    r0 = np.minimum(rows.astype(int), cells - 1)
    c0 = np.minimum(cols.astype(int), cells - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _paint(img: np.ndarray, shape: Shape, value: float, xs: np.ndarray, zs: np.ndarray, edge: float) -> None:
    """Alpha-blend ``value`` into ``img`` ``[T or 1, H, W]`` where ``shape`` covers it."""
    x0, x1, z0, z1 = shape.extent()
    c0, c1 = np.searchsorted(xs, [x0 - edge, x1 + edge])
    r0, r1 = np.searchsorted(zs, [z0 - edge, z1 + edge])
    if c1 <= c0 or r1 <= r0:
        return
    cov = shape.coverage(xs[None, None, c0:c1], zs[None, r0:r1, None], edge)
    block = img[:, r0:r1, c0:c1]
    cov *= np.float32(value) - block
    block += cov


def _shadow_gain(sector: Sector, cm_per_px: float, centre: np.ndarray, half_width: float) -> np.ndarray:
    """Acoustic shadow ``[P]`` behind a dense reflector: beams through it lose most of their energy.

    The reflector's position is taken at its mean over the clip.
    """
    pixels, _, _ = _fan_pixels(sector)
    r, theta = (v.ravel()[pixels] for v in _polar(sector))
    centre = np.asarray(centre, dtype=np.float64)
    centre = centre.mean(axis=0) if centre.ndim == 2 else centre
    cx, cz = centre / cm_per_px
    rd, td = math.hypot(cx, cz), math.atan2(cx, cz)
    width = math.atan2(half_width / cm_per_px, rd)
    inside = np.clip(2.0 - 2.0 * np.abs(theta - td) / width, 0.0, 1.0)
    behind = np.clip((r - rd - 2.0) / 3.0, 0.0, 1.0)
    return (1.0 - 0.6 * inside * behind).astype(np.float32)


def render_view(
    state: CardiacState,
    view: str,
    size: int,
    frames: int,
    fps: float,
    rng: np.random.Generator,
    acquisition: AcquisitionRealism | None = None,
) -> Rendered:
    """Render one clip of ``state`` in ``view`` (``"A4C"``, ``"A2C"``, ``"PLAX"``, ``"PSAX"``).

    ``acquisition`` varies how the clip was acquired (gain, fan, artefacts); ``None``
    is the clean preset's textbook scanner.
    """
    scene_of = SCENES.get(view)
    acq = acquisition_mod.draw_acquisition(
        acquisition or AcquisitionRealism(), view, np.random.default_rng(int(rng.integers(0, 2**63)))
    )
    if acq.fps:  # the scanner's frame rate; the clip lasts as long as the one asked for
        frames = max(2, int(round(frames * acq.fps / fps)))
        fps = acq.fps
    timing = clip_timing(state.heart_rate, fps, frames, rng)
    motion = heart_motion(state, timing, frames)
    if acq.foreshortened:  # the apical cut misses the true apex: the LV looks short
        motion = replace(motion, c=motion.c * 0.82)
    pose = Pose(
        tilt=float(rng.uniform(-5.0, 5.0)) + acq.tilt,
        dx=float(rng.uniform(-0.5, 0.5)),
        dz=float(rng.uniform(-0.3, 0.3)),
        chest=float(1.0 + 0.6 * rng.random() + 0.6 * max(state.bsa - 1.8, 0.0)),
    )
    scene = scene_of(state, motion, pose)
    sector = sector_for(size, acquisition_mod.half_angle(acq))
    # Sonographers set the depth to the heart; the far wall of the atria may fall off the fan.
    depth = float(np.clip(math.ceil(scene.bottom - (1.0 if view in ("A4C", "A2C") else 0.0)), 12.0, 24.0))
    s = depth / sector.radius
    z0 = 0.0
    if acq.zoom:  # a write-zoom: a magnified window of the heart's middle
        magnification, z0 = acquisition_mod.zoom_window(depth)
        s *= magnification
    xs = ((np.arange(size) - sector.apex_col) * s).astype(np.float32)
    zs = ((np.arange(size) - sector.apex_row) * s + z0).astype(np.float32)
    edge = np.float32(1.0 * s)

    # Still layers (background, chest wall, pericardium, fat) are painted once; the
    # moving ones on every frame.
    base = BACKGROUND * (1.0 + 0.5 * _smooth_field((size, size), 5, rng))
    chest_rows = zs < pose.chest
    base[chest_rows] = CHEST_WALL * (1.0 + 0.3 * np.sin(zs[chest_rows] * 9.0))[:, None]
    base = base[None]
    layers = list(scene.layers)
    while layers and layers[0][0].is_static():
        _paint(base, *layers.pop(0), xs, zs, edge)
    img = np.empty((frames, size, size), dtype=np.float32)
    img[:] = base
    for shape, value in layers:
        _paint(img, shape, value, xs, zs, edge)
    for device in visible_devices(state, view):
        for shape, value in scene.devices[device]:
            _paint(img, shape, value, xs, zs, edge)

    # Tissue is not a flat grey: a coarse texture, and specular walls that fade where
    # they run along the beam (the lateral walls of apical views).
    img *= 1.0 + TEXTURE * _smooth_field((size, size), max(4, size // 8), rng)
    incidence = _incidence(img, sector, s)

    # Only the fan's pixels carry ultrasound: speckle, clutter, gain and shadows act there.
    pixels, _, _ = _fan_pixels(sector)
    r, theta = (v.ravel()[pixels] for v in _polar(sector))
    q = state.image_quality
    fan = img.reshape(frames, -1)[:, pixels]
    fan *= incidence
    fan += ((0.04 + 0.14 * (1 - q)) * np.exp(-r * (s / 2.5))).astype(np.float32)  # near-field clutter
    fan += acquisition_mod.near_field(acq, r, max(pose.chest - z0, 0.5) / s)
    speckle = _speckle(sector, frames, rng)
    # blood scatters weakly and sparsely: its speckle is a few specks on black, not a
    # smooth haze (a heavier-tailed amplitude where the echo is weak)
    power = 1.0 + BLOOD_SPARSITY * np.clip(1.0 - fan / 0.2, 0.0, 1.0)
    np.power(speckle, power, out=speckle, where=power > 1.0)  # tissue keeps its speckle as drawn
    fan *= speckle
    gain = 1.0 - (0.25 + 0.3 * (1 - q)) * (r / sector.radius) ** 1.4
    gain *= 1.0 - 0.3 * (np.abs(theta) / sector.half_angle) ** 4
    gain *= 0.9 + 0.15 * q
    gain *= acquisition_mod.fan_gain(acq, r, theta, sector.radius, sector.half_angle)
    for centre, half_width in scene.shadows:
        gain *= _shadow_gain(sector, s, centre - np.asarray([0.0, z0], dtype=np.float32), half_width)
    fan *= gain.astype(np.float32)
    image = np.zeros((frames, size * size), dtype=np.float32)
    image[:, pixels] = fan
    image = _point_spread(image.reshape(frames, size, size), size)
    gray = _grey_map(image.reshape(frames, -1)[:, pixels], acq.dynamic_range)
    out = np.zeros((frames, size * size), dtype=np.uint8)
    out[:, pixels] = gray
    rgb = acquisition_mod.tint(out.reshape(frames, size, size), acq.vendor)
    if acq.doppler_box:  # colour flow over the mitral inflow
        centre = np.asarray(scene.lv.center, dtype=np.float64).reshape(-1, 2).mean(axis=0)
        rc = math.hypot(centre[0] / s, (centre[1] - z0) / s)
        flow = motion.mitral_open - motion.aortic_open
        acquisition_mod.colour_doppler(
            rgb, r, theta, pixels, flow, (rc, math.atan2(centre[0], centre[1] - z0))
        )
    burn_in(rgb, sector, timing, state.heart_rate, fps, depth, style=acq.vendor)

    grid_x, grid_z = np.meshgrid(xs, zs)
    lv_ed = scene.lv.mask(grid_x, grid_z, timing.ed_frame)
    lv_es = scene.lv.mask(grid_x, grid_z, timing.es_frame)
    regions = {name: shape.mask(grid_x, grid_z, timing.ed_frame) for name, shape in scene.regions.items()}
    tracings = [] if view == "PSAX" else _tracings(scene.lv, timing, sector, s, z0)
    cm_per_px_x = s
    if acq.dual_screen:  # the clip as the left half of a dual screen, a frozen frame right
        rgb = acquisition_mod.dual_screen(rgb, timing.es_frame)
        lv_ed, lv_es = (acquisition_mod.left_half(m, axis=1) for m in (lv_ed, lv_es))
        regions = {name: acquisition_mod.left_half(mask, axis=1) for name, mask in regions.items()}
        tracings = [(x1 / 2, y1, x2 / 2, y2, f) for x1, y1, x2, y2, f in tracings]
        cm_per_px_x = 2 * s
    return Rendered(
        rgb, timing, depth, s, sector, lv_ed, lv_es, regions, tracings, motion.volume, fps, cm_per_px_x, acq
    )


def _incidence(img: np.ndarray, sector: Sector, cm_per_px: float) -> np.ndarray:
    """Specular brightness ``[T, P]`` over the fan: a boundary facing the beam echoes strongly.

    The orientation of the tissue's boundaries comes from the structure tensor of the
    painted echogenicities, smoothed over about a wall's thickness so that a whole wall
    takes the orientation of its edges; where the gradient runs across the beam (a wall
    along the beam) the tissue fades.
    """
    from scipy.ndimage import gaussian_filter

    px = 0.15 / cm_per_px  # the boundary's width, about 1.5 mm
    smooth = gaussian_filter(img, (0, px, px))
    gz, gx = np.gradient(smooth, axis=(1, 2))
    wall = 0.5 / cm_per_px  # about a wall's thickness
    jxx = gaussian_filter(gx * gx, (0, wall, wall))
    jzz = gaussian_filter(gz * gz, (0, wall, wall))
    jxz = gaussian_filter(gx * gz, (0, wall, wall))
    pixels, _, _ = _fan_pixels(sector)
    _, theta = (v.ravel()[pixels] for v in _polar(sector))
    ux, uz = np.sin(theta).astype(np.float32), np.cos(theta).astype(np.float32)
    t = img.shape[0]
    jxx, jzz, jxz = (j.reshape(t, -1)[:, pixels] for j in (jxx, jzz, jxz))
    trace = jxx + jzz + np.float32(1e-9)
    along = (jxx * ux * ux + 2.0 * jxz * ux * uz + jzz * uz * uz) / trace
    structure = trace / (trace + np.float32(STRUCTURE_SCALE * (cm_per_px / 0.15) ** -2))
    return (1.0 - SPECULAR * structure * (1.0 - along)).astype(np.float32)


def _point_spread(image: np.ndarray, size: int) -> np.ndarray:
    """Blur by the system's point spread: finer along the beam than across it."""
    from scipy.ndimage import gaussian_filter

    scale = size / 112.0
    return gaussian_filter(image, (0, 0.7 * scale, 1.5 * scale))


def _grey_map(fan: np.ndarray, dynamic_range: float = 1.0) -> np.ndarray:
    """Log-like compression of echo amplitude into grey levels, as a scanner's grey map does.

    Weak echoes stay dark and strong ones do not saturate: amplitude ``a`` (about 1 for
    bright tissue) maps to ``255 · (1 - exp(-k·a)) / (1 - exp(-k))`` raised to a power
    that the dynamic range sets (a higher range is a greyer, softer image).
    """
    k = np.float32(GREY_KNEE)
    grey = -np.expm1(-k * np.maximum(fan, 0.0)) / -np.expm1(-k)
    grey **= np.float32(GREY_GAMMA / dynamic_range)
    return np.clip(255.0 * grey, 0.0, 255.0).astype(np.uint8)


def _tracings(
    lv: Ellipse, timing: Timing, sector: Sector, s: float, z0: float = 0.0, chords: int = 20
) -> list[tuple[float, float, float, float, int]]:
    """EchoNet-Dynamic ``VolumeTracings`` rows: the long axis, then chords across the LV."""
    rows: list[tuple[float, float, float, float, int]] = []

    def px(p: np.ndarray) -> tuple[float, float]:
        return float(p[0] / s + sector.apex_col), float((p[1] - z0) / s + sector.apex_row)

    for frame in (timing.ed_frame, timing.es_frame):
        one = _at_frame(lv, frame)
        base, u = np.asarray(one.center, float), np.asarray(one.axis, float)
        a, c = float(one.a), float(one.c)
        n = _perp(u)
        rows.append((*px(base - u * c), *px(base), frame))
        for k in range(chords):
            p = -c + (k + 0.5) * c / chords
            half = a * math.sqrt(max(0.0, 1.0 - (p / c) ** 2))
            mid = base + u * p
            rows.append((*px(mid - n * half), *px(mid + n * half), frame))
    return [(round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), f) for x1, y1, x2, y2, f in rows]
