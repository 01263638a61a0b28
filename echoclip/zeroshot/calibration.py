"""Turning raw binary zero-shot scores into probabilities.

A cosine similarity of 0.27 means nothing by itself: its scale differs per prompt,
per target and per model. A few labelled studies are enough to fit a monotone map
from score to probability: Platt scaling (a logistic curve, two parameters, the
safe choice for a handful of studies) or isotonic regression (a step function,
for more data). The fitted map is plain JSON, stored in the prompt set next to the
prompts it belongs to (``"calibration"`` of a binary target), and it is only valid
for the model it was fitted with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echoclip.errors import ConfigError, DataError

__all__ = ["CALIBRATION_METHODS", "Calibration", "fit_calibration", "calibrate_prompt_set"]

CALIBRATION_METHODS = ("platt", "isotonic")


@dataclass(frozen=True)
class Calibration:
    """A fitted score -> probability map.

    Attributes:
        method: ``platt`` or ``isotonic``.
        score: the binary scoring method whose output it maps (``similarity`` or ``contrast``).
        params: ``{"coef", "intercept"}`` (Platt: ``p = sigmoid(coef * s + intercept)``) or
            ``{"x", "y"}`` (isotonic: knots, linear in between, flat outside).
        n, n_positive: studies it was fitted on.
    """

    method: str
    score: str
    params: Mapping[str, Any]
    n: int = 0
    n_positive: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, scores: Any) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            z = float(self.params["coef"]) * s + float(self.params["intercept"])
            return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow
        return np.interp(s, np.asarray(self.params["x"], float), np.asarray(self.params["y"], float))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "score": self.score,
            **{k: v for k, v in self.params.items()},
            "n": self.n,
            "n_positive": self.n_positive,
            **dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Read back what :meth:`to_dict` wrote; a :class:`ConfigError` naming what is wrong otherwise."""
        method = d.get("method")
        if method not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration 'method' must be one of {CALIBRATION_METHODS}, got {method!r}")
        keys = ("coef", "intercept") if method == "platt" else ("x", "y")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ConfigError(f"{method} calibration lacks {missing}")
        score = d.get("score", "similarity")
        if score not in ("similarity", "contrast"):
            raise ConfigError(f"calibration 'score' must be 'similarity' or 'contrast', got {score!r}")
        if method == "isotonic" and (len(d["x"]) != len(d["y"]) or len(d["x"]) == 0):
            raise ConfigError("isotonic calibration needs 'x' and 'y' of the same non-zero length")
        known = {"method", "score", "n", "n_positive", *keys}
        return cls(
            method=method,
            score=score,
            params={k: d[k] for k in keys},
            n=int(d.get("n", 0)),
            n_positive=int(d.get("n_positive", 0)),
            extra={k: v for k, v in d.items() if k not in known},
        )


def fit_calibration(
    scores: Any, labels: Any, method: str = "platt", *, score: str = "similarity"
) -> Calibration:
    """Fit a score -> probability map on labelled studies.

    ``scores`` are raw binary zero-shot scores (``score`` names the method that made
    them), ``labels`` 0/1 (NaN rows are ignored). Both classes must be present.

    Platt scaling fits a lightly regularised logistic regression on standardised
    scores (so that a handful of studies cannot give an infinitely steep curve),
    then folds the standardisation back into ``coef`` and ``intercept``.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; known: {list(CALIBRATION_METHODS)}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise DataError(f"calibration needs one label per score, got {s.size} scores and {y.size} labels")
    keep = np.isfinite(s) & np.isfinite(y)
    s, y = s[keep], y[keep].astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DataError(
            f"calibration needs labelled studies of both classes; got {n_pos} positive of {len(y)}"
        )
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        mean, std = float(s.mean()), float(s.std()) or 1.0
        model = LogisticRegression(C=1.0).fit(((s - mean) / std)[:, None], y)
        coef = float(model.coef_[0, 0]) / std
        intercept = float(model.intercept_[0]) - coef * mean
        params: dict[str, Any] = {"coef": coef, "intercept": intercept}
    else:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y.astype(float))
        params = {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}
    return Calibration(method=method, score=score, params=params, n=len(y), n_positive=n_pos)


def calibrate_prompt_set(
    prompt_set: Any,
    scores: Mapping[str, Any],
    labels: Mapping[str, Any],
    method: str = "platt",
    *,
    score: str | None = None,
) -> Any:
    """A copy of ``prompt_set`` whose binary targets in ``scores`` carry fitted calibrations.

    ``scores[target]`` are raw scores by the ``score`` method (default: the target's
    default method, as ``zero_shot`` scores it unasked) and ``labels[target]`` the
    truths of the same studies. Save the result with
    :func:`echoclip.zeroshot.prompts.save_prompt_set`; ``method="calibrated"`` then
    uses it.
    """
    from echoclip.zeroshot.prompts import load_prompt_set
    from echoclip.zeroshot.scoring import default_method

    prompt_set = load_prompt_set(prompt_set)
    fitted = {}
    for target, target_scores in scores.items():
        if target not in labels:
            raise DataError(f"no labels given for target {target!r}")
        spec = prompt_set.targets.get(target)
        made_by = score or default_method("binary", bool(getattr(spec, "negative", ())))
        fitted[target] = fit_calibration(target_scores, labels[target], method, score=made_by).to_dict()
    return prompt_set.with_calibration(fitted)
