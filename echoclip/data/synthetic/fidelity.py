"""How close simulated frames are to real ones: grey levels, speckle, and a patch classifier.

Every figure is taken inside the fan (the sector of the ultrasound field of view), on
grey frames ``[T, H, W]`` of the same size and scale:

- :func:`histogram_distance`: the earth mover's (Wasserstein-1) distance between two
  sets of grey levels, in grey levels (or their Jensen–Shannon distance);
- :func:`speckle_snr`: mean over SD of a region's grey levels (fully developed speckle
  on an envelope image gives 1.91; log compression and smoothing raise it);
- :func:`colour_flow`: the colour-Doppler pixels, which are not grey-scale echo and are
  left out of every figure;
- :func:`tissue_blood`: the automatic rule that finds tissue and blood in any frame,
  the same rule for real and simulated frames;
- :func:`patch_features` and :func:`patch_auc`: the cross-validated AUC of a logistic
  regression telling real patches from simulated ones by their statistics (0.5: it
  cannot tell them apart).

Example (``real`` and ``sim`` grey frames ``[T, H, W]`` at the same scale)::

    >>> fan, sim_fan = fan_mask(real), study.truth.sector_mask       # doctest: +SKIP
    >>> histogram_distance(sim[:, sim_fan], real[:, fan])             # doctest: +SKIP
    14.1
    >>> rng = np.random.default_rng(0)
    >>> patch_auc(patch_features(real, fan, 2000, rng), patch_features(sim, sim_fan, 2000, rng))  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PATCH_FEATURES",
    "to_grey",
    "colour_flow",
    "fan_mask",
    "grey_histogram",
    "histogram_distance",
    "speckle_snr",
    "tissue_blood",
    "patch_features",
    "patch_auc",
]

PATCH_FEATURES = (
    "mean",
    "sd",
    "skewness",
    "kurtosis",
    "mean_abs_gradient",
    "autocorr_rows",
    "autocorr_cols",
    "dark_fraction",
)
DARK_LEVEL = 16  # grey levels below this count as dark (the share of a patch that is black)


def to_grey(frames: np.ndarray) -> np.ndarray:
    """Grey levels (float32, 0–255) of frames ``[..., 3]`` (ITU-R BT.601 luma) or of grey frames as given."""
    frames = np.asarray(frames)
    if frames.ndim >= 3 and frames.shape[-1] == 3:
        return (frames[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(
            np.float32
        )
    return frames.astype(np.float32)


def colour_flow(frames: np.ndarray, *, ratio: float = 0.3, floor: float = 12.0) -> np.ndarray:
    """Where frames ``[..., 3]`` show colour flow rather than a tinted grey map: boolean ``[...]``.

    A pixel is colour when its chroma (largest minus smallest channel) is above ``floor``
    grey levels and above ``ratio`` of its largest channel. A vendor's tinted grey map
    keeps every channel in a fixed proportion (chroma at most a quarter of the largest in
    the simulator's sepia), while a colour-flow pixel is red or blue on dim grey. Grey
    frames (no channel axis) have none.
    """
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-1] != 3:
        return np.zeros(frames.shape, dtype=bool)
    top = frames.max(axis=-1).astype(np.float32)
    chroma = top - frames.min(axis=-1).astype(np.float32)
    return (chroma > floor) & (chroma > ratio * top)


def fan_mask(frames: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """The fan of grey frames ``[T, H, W]``: where any frame is above ``threshold``, as one solid region.

    The temporal maximum finds every pixel that ever echoes; an opening drops isolated
    bright pixels (compression noise, marks), the largest connected region is kept and
    its holes (chambers dark in every frame) are filled.
    """
    from scipy import ndimage

    grey = to_grey(frames)
    peak = grey.max(axis=0) if grey.ndim == 3 else grey
    mask = ndimage.binary_opening(peak > threshold, structure=np.ones((3, 3)))
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(peak.shape, bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))))
    mask = ndimage.binary_closing(labels == largest, structure=np.ones((5, 5)))
    return ndimage.binary_fill_holes(mask)


def grey_histogram(values: np.ndarray) -> np.ndarray:
    """The normalised 256-bin histogram of grey levels (any shape; values clipped to 0–255)."""
    levels = np.clip(np.rint(np.asarray(values, np.float64).ravel()), 0, 255).astype(np.int64)
    counts = np.bincount(levels, minlength=256).astype(np.float64)
    return counts / max(1.0, counts.sum())


def histogram_distance(a: np.ndarray, b: np.ndarray, metric: str = "wasserstein") -> float:
    """Distance between the grey-level histograms of two sets of pixels (e.g. ``frames[:, fan]``).

    ``"wasserstein"``: the earth mover's distance in grey levels (how far, on average,
    grey levels must move to turn one histogram into the other; 0 for identical ones).
    ``"jensen_shannon"``: the Jensen–Shannon distance in bits, 0 to 1.
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    ha, hb = grey_histogram(a), grey_histogram(b)
    if metric == "wasserstein":
        levels = np.arange(256, dtype=np.float64)
        return float(wasserstein_distance(levels, levels, ha, hb))
    if metric == "jensen_shannon":
        return float(jensenshannon(ha, hb, base=2))
    raise ValueError(f"unknown histogram metric {metric!r}; known: jensen_shannon, wasserstein")


def speckle_snr(values: np.ndarray) -> float:
    """Mean over SD of grey levels (Rayleigh speckle: 1.91); NaN for no pixels or no spread."""
    values = np.asarray(values, np.float64).ravel()
    sd = values.std() if values.size else 0.0
    return float(values.mean() / sd) if sd > 0 else float("nan")


def tissue_blood(
    frame: np.ndarray,
    fan: np.ndarray,
    *,
    window: int = 5,
    near_field: float = 0.15,
    low: float = 25.0,
    high: float = 75.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and blood masks of one grey frame ``[H, W]``, by a rule blind to where the frame came from.

    The frame is smoothed by a ``window``×``window`` mean taken over fan pixels only
    (the black outside does not darken the edge). Pixels count if they lie in the fan
    eroded by ``window // 2`` and below its top ``near_field`` share of rows (the near
    field's clutter and reverberation are neither). Blood: those whose local mean is
    at or below the ``low`` percentile of the local means over the counted pixels;
    tissue: at or above the ``high`` percentile.
    """
    from scipy import ndimage

    grey = to_grey(frame)
    fan = np.asarray(fan, bool)
    weight = ndimage.uniform_filter(fan.astype(np.float64), window, mode="constant")
    local = ndimage.uniform_filter(np.where(fan, grey, 0.0).astype(np.float64), window, mode="constant")
    local = local / np.maximum(weight, 1e-9)
    inner = (
        ndimage.binary_erosion(fan, structure=np.ones((window, window)), border_value=0)
        if window > 1
        else fan
    )
    rows = np.nonzero(fan.any(axis=1))[0]
    if rows.size == 0 or not inner.any():
        empty = np.zeros(fan.shape, bool)
        return empty, empty
    top = rows[0] + near_field * (rows[-1] - rows[0] + 1)
    counted = inner & (np.arange(fan.shape[0])[:, None] >= top)
    if not counted.any():
        empty = np.zeros(fan.shape, bool)
        return empty, empty
    lo, hi = np.percentile(local[counted], [low, high])
    return counted & (local >= hi), counted & (local <= lo)


def _patch_stats(patches: np.ndarray) -> np.ndarray:
    """The :data:`PATCH_FEATURES` of patches ``[N, P, P]`` (float64)."""
    n = patches.shape[0]
    flat = patches.reshape(n, -1)
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    var = (centred**2).mean(1)
    sd = np.sqrt(var)
    safe = np.where(var > 0, var, 1.0)
    skew = np.where(var > 0, (centred**3).mean(1) / safe**1.5, 0.0)
    kurt = np.where(var > 0, (centred**4).mean(1) / safe**2 - 3.0, 0.0)
    grad = 0.5 * (
        np.abs(np.diff(patches, axis=1)).mean(axis=(1, 2))
        + np.abs(np.diff(patches, axis=2)).mean(axis=(1, 2))
    )
    c = patches - mean[:, None, None]
    rows = np.where(var > 0, (c[:, :, 1:] * c[:, :, :-1]).mean(axis=(1, 2)) / safe, 0.0)
    cols = np.where(var > 0, (c[:, 1:, :] * c[:, :-1, :]).mean(axis=(1, 2)) / safe, 0.0)
    dark = (flat < DARK_LEVEL).mean(1)
    return np.stack([mean, sd, skew, kurt, grad, rows, cols, dark], axis=1)


def patch_features(
    frames: np.ndarray, fan: np.ndarray, n: int, rng: np.random.Generator, *, patch: int = 16
) -> np.ndarray:
    """Statistics (:data:`PATCH_FEATURES`) of ``n`` random ``patch``×``patch`` patches wholly inside the fan.

    ``frames`` are grey ``[T, H, W]``; ``fan`` is one mask ``[H, W]`` for all of them or
    one per frame ``[T, H, W]``. Patches of one frame do not overlap (each frame is cut
    on a grid of step ``patch`` shifted at random), so that a classifier cannot score
    a held-out patch by a half-shared twin it trained on; ``n`` are drawn from them
    without replacement where there are enough (else with: ask for fewer, or the AUC
    of two sets of one source rises above 0.5). Lag-1 autocorrelation "along rows" is
    between horizontal neighbours.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    grey = to_grey(frames)
    if grey.ndim == 2:
        grey = grey[None]
    fan = np.broadcast_to(np.asarray(fan, bool), grey.shape)
    # a patch fits where the whole patch×patch window is fan: its top-left corners
    inside = sliding_window_view(fan, (patch, patch), axis=(1, 2)).all(axis=(-2, -1))
    shift = rng.integers(0, patch, size=(len(grey), 2))
    on_grid = ((np.arange(inside.shape[1])[None, :, None] - shift[:, 0, None, None]) % patch == 0) & (
        (np.arange(inside.shape[2])[None, None, :] - shift[:, 1, None, None]) % patch == 0
    )
    if not inside.any():
        raise ValueError(f"no {patch}×{patch} patch fits inside the fan")
    # a fan hardly larger than a patch may miss every grid: then any position will do
    t, y, x = np.nonzero(inside & on_grid if (inside & on_grid).any() else inside)
    pick = rng.choice(t.size, size=n, replace=n > t.size)
    offsets = np.arange(patch)
    rows = (y[pick, None] + offsets)[:, :, None]
    cols = (x[pick, None] + offsets)[:, None, :]
    patches = grey[t[pick, None, None], rows, cols].astype(np.float64)
    return _patch_stats(patches)


def patch_auc(a: np.ndarray, b: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling feature rows ``a`` from ``b``.

    The larger set is subsampled (seeded) to the size of the smaller one, so the
    classes are balanced; features are standardised inside each fold. The mean AUC
    over ``folds`` stratified folds: 0.5 when the two cannot be told apart, 1.0 when
    always.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    if n < folds:
        raise ValueError(f"need at least {folds} rows per class, got {len(a)} and {len(b)}")
    a = np.asarray(a, np.float64)[rng.permutation(len(a))[:n]]
    b = np.asarray(b, np.float64)[rng.permutation(len(b))[:n]]
    features = np.concatenate([a, b])
    labels = np.concatenate([np.zeros(n, int), np.ones(n, int)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, features, labels, cv=split, scoring="roc_auc")))
