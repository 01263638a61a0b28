"""Sampling weights that show rarely mentioned findings more often during training.

A device named in 5 % of reports is one sentence among fifteen in 2 of the 40 pairs of
a batch: the contrastive loss rarely needs it to tell pairs apart, and a short run
learns it last. :func:`mention_weights` reads which concepts each report mentions
(regular expressions on the text, so no labels are needed) and weights the studies
that mention a rare one up, so that each concept is drawn about ``target_share`` of
the time. :func:`share_weights` applies the same rule to mentions read otherwise: a
finding is stated or denied ("normal RV size"), which one regular expression cannot
tell apart. The weights go into a manifest column that
``TrainConfig.sample_weight_column`` names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["mention_weights", "share_weights"]


def mention_weights(
    reports: Sequence[str],
    patterns: Mapping[str, str | re.Pattern[str]],
    target_share: float = 0.1,
    max_weight: float = 10.0,
) -> np.ndarray:
    """One weight per report: the largest boost of the concepts it mentions, else 1.

    A concept mentioned by a share ``p`` of the reports gets the boost
    ``target_share / p`` (at least 1, at most ``max_weight``); concepts no report
    mentions are ignored. Returns ``float64 [N]``.

    >>> mention_weights(["TAVR IN SITU.", "NORMAL.", "NORMAL.", "NORMAL."], {"tavr": "TAVR"}, 0.5)
    array([2., 1., 1., 1.])
    """
    mentions = np.zeros((len(reports), len(patterns)), dtype=bool)
    for j, pattern in enumerate(patterns.values()):
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        mentions[:, j] = [bool(regex.search(str(r or ""))) for r in reports]
    return share_weights(mentions, target_share, max_weight)


def share_weights(mentions: np.ndarray, target_share: float = 0.1, max_weight: float = 10.0) -> np.ndarray:
    """One weight per row of ``bool [N, concepts]``: the largest boost of the concepts the
    row mentions, else 1 (the rule of :func:`mention_weights`, for mentions read otherwise).

    >>> share_weights(np.array([[True], [False], [False], [False]]), 0.5)
    array([2., 1., 1., 1.])
    """
    if not 0 < target_share <= 1:
        raise ValueError(f"target_share must be in (0, 1], got {target_share}")
    if max_weight < 1:
        raise ValueError(f"max_weight must be >= 1, got {max_weight}")
    mentions = np.asarray(mentions, dtype=bool)
    if mentions.ndim != 2:
        raise ValueError(f"mentions must be [reports, concepts], got shape {mentions.shape}")
    weights = np.ones(len(mentions), dtype=np.float64)
    for column in mentions.T:
        share = column.mean() if len(column) else 0.0
        if share == 0:
            continue
        boost = float(np.clip(target_share / share, 1.0, max_weight))
        weights[column] = np.maximum(weights[column], boost)
    return weights
