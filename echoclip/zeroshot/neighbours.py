"""Reference reports with labels, for the ``knn`` scoring method.

EchoPrime predicts a phenotype by averaging the labels of the reports nearest to a
study's video; that needs the reports' embeddings and each one's labels
(``device_*``, ``finding_*``, ``ef``). ``echoclip embed`` writes report embeddings
(``EMB/reports``) and, beside them, the videos with every manifest column
(``EMB/videos``); :func:`load_neighbours` joins the two by ``study_id``::

    neighbours = load_neighbours("runs/emb")            # the training split's reports
    echoclip.zero_shot(model, tokenizer, videos, prompts="devices", method="knn", neighbours=neighbours)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoclip.errors import ConfigError, DataError

__all__ = ["Neighbours", "load_neighbours", "DEFAULT_K"]

DEFAULT_K = 50  # EchoPrime's neighbour count


@dataclass
class Neighbours:
    """Reference report embeddings ``[M, D]`` (unit length) and their labels (``M`` rows)."""

    embeddings: np.ndarray
    labels: pd.DataFrame
    source: str = "<arrays>"

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.labels = pd.DataFrame(self.labels).reset_index(drop=True)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.labels):
            raise DataError(
                f"{self.source}: {self.embeddings.shape} embeddings for {len(self.labels)} label rows"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def for_label(self, column: str, below: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings, values)`` for one target: the column, or ``column < below`` (NaN kept)."""
        if column not in self.labels.columns:
            raise ConfigError(
                f"{self.source}: the reference reports have no label column {column!r} "
                f"(they have: {sorted(map(str, self.labels.columns))})"
            )
        values = pd.to_numeric(self.labels[column].astype(object), errors="coerce").to_numpy(float)
        if below is not None:
            values = np.where(np.isnan(values), np.nan, (values < below).astype(float))
        return self.embeddings, values


def load_neighbours(source: Any, *, split: str | None = "train") -> Neighbours:
    """Reference reports from :class:`Neighbours`, ``(embeddings, labels)``, an embedding store
    whose metadata holds the labels, or a folder of ``reports/`` and ``videos/`` stores (labels
    joined from the videos' manifest columns by ``study_id``).

    ``split`` keeps only rows of that split when the metadata has a ``split`` column, so that
    a study is never its own neighbour when the test split is scored (``None``: all rows).
    """
    if isinstance(source, Neighbours):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        return _only_split(Neighbours(source[0], source[1]), split)
    if not isinstance(source, str | os.PathLike):
        raise ConfigError(
            f"neighbours must be a store folder or (embeddings, labels), not {type(source).__name__}"
        )
    from echoclip.retrieval import EmbeddingStore

    path = Path(source)
    if (path / "store.json").is_file():
        store = EmbeddingStore(path)
        labels = store.metadata()
        if labels is None:
            raise DataError(f"{path}: the store keeps no metadata, so its reports have no labels")
        return _only_split(Neighbours(store.embeddings(), labels, str(path)), split)
    if not (path / "reports" / "store.json").is_file():
        raise DataError(
            f"{path}: no embedding store here and no reports/ store in it (write one with `echoclip embed`)"
        )
    reports = EmbeddingStore(path / "reports")
    labels = reports.metadata()
    if labels is None or "study_id" not in labels.columns:
        raise DataError(f"{path / 'reports'}: its metadata has no study_id to find each report's labels by")
    if (path / "videos" / "store.json").is_file():
        videos = EmbeddingStore(path / "videos").metadata()
        if videos is not None and "study_id" in videos.columns:
            extra = [c for c in videos.columns if c not in labels.columns or c == "study_id"]
            per_study = videos[extra].drop_duplicates(subset="study_id")
            labels = labels.merge(per_study, on="study_id", how="left")
    return _only_split(Neighbours(reports.embeddings(), labels, str(path)), split)


def _only_split(neighbours: Neighbours, split: str | None) -> Neighbours:
    if split is None or "split" not in neighbours.labels.columns:
        return neighbours
    keep = (neighbours.labels["split"].astype(str) == split).to_numpy()
    if not keep.any():
        raise DataError(f"{neighbours.source}: no reference report of split {split!r}")
    return Neighbours(neighbours.embeddings[keep], neighbours.labels[keep], neighbours.source)
