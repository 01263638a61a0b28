"""Pairing reports with videos: one training item per study, not per video."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from echoclip.errors import DataError
from echoclip.models.embed import table_views, view_name
from echoclip.train.contrastive import sample_rng


class StudyPairs(Dataset):
    """One item per study; each epoch pairs the study's report with one of its videos
    (or, with ``videos_per_study``, up to that many of them).

    A study often has several videos (views, repeated acquisitions) and one report.
    Treating each video as its own pair would put the same report twice in a batch
    as a false negative; drawing one video per study per epoch avoids that while
    every video is still used over the epochs. The draw depends only on
    ``(seed, epoch, study)``, so runs resume exactly.

    ``weights`` (one per video; a study takes the largest of its videos') become
    :attr:`sample_weights`, which the trainer draws studies by.

    With ``videos_per_study = K`` (study-level training) an item holds up to ``K`` of the
    study's videos, drawn without replacement (all of them when it has fewer), as
    ``"videos"`` ``[n, 3, T, H, W]`` with ``"cm_per_px"`` ``[n, 2]`` and ``"views"`` (each
    video's view from ``views``, one per video of ``base``, or ``None``: unknown). An
    unreadable video is left out; a study none of whose drawn videos reads is ``None``.
    """

    def __init__(
        self,
        base: Dataset,
        study_ids: Sequence[Any],
        reports: Sequence[Any] | None = None,
        seed: int = 0,
        skip_empty_reports: bool = True,
        weights: Sequence[float] | None = None,
        videos_per_study: int | None = None,
        views: Sequence[Any] | None = None,
    ) -> None:
        if videos_per_study is not None and videos_per_study < 1:
            raise DataError(f"videos_per_study must be at least 1, got {videos_per_study}")
        if views is not None and len(views) != len(study_ids):
            raise DataError(f"{len(views)} views for {len(study_ids)} videos")
        if len(study_ids) != len(base):  # type: ignore[arg-type]
            raise DataError(f"{len(study_ids)} study ids for {len(base)} videos")  # type: ignore[arg-type]
        if weights is not None and len(weights) != len(study_ids):
            raise DataError(f"{len(weights)} sample weights for {len(study_ids)} videos")
        groups: dict[str, list[int]] = {}
        for row, study in enumerate(study_ids):
            if skip_empty_reports and reports is not None and not str(reports[row] or "").strip():
                continue
            groups.setdefault(str(study), []).append(row)
        self.base = base
        self.groups = list(groups.values())
        self.sample_weights: list[float] | None = None
        if weights is not None:
            self.sample_weights = [max(float(weights[row]) for row in rows) for rows in self.groups]
        self.seed = seed
        self.epoch = 0
        self.videos_per_study = videos_per_study
        self.views = None if views is None else [view_name(v) for v in views]

    @classmethod
    def from_table_dataset(
        cls,
        base: Any,
        seed: int = 0,
        skip_empty_reports: bool = True,
        weight_column: str | None = None,
        videos_per_study: int | None = None,
        view_column: str | None = None,
    ) -> StudyPairs:
        """Build from a dataset with a ``table`` (a DataFrame with ``study_id`` and ``report``).

        ``weight_column`` names a column of sampling weights (see :attr:`sample_weights`).
        ``videos_per_study`` makes items of several videos (study-level training), each
        with its view from the column ``view_column`` chooses (:func:`table_views`).
        """
        table = base.table
        where = getattr(base, "path", getattr(base, "root", "the data set"))
        if "study_id" not in table.columns:
            raise DataError(f"{where}: no study_id column, which pairs videos with their study's report")
        if videos_per_study is not None:
            ids = table["study_id"].astype(str).str.strip()
            missing = int((ids.isin(["", "nan", "None", "<NA>"]) | table["study_id"].isna()).sum())
            if missing:
                raise DataError(
                    f"{where}: column study_id is empty in {missing} of {len(table)} rows; "
                    "study-level training groups videos by it"
                )
        views = None if view_column is None else table_views(table, view_column, where)
        weights = None
        if weight_column is not None:
            if weight_column not in table.columns:
                raise DataError(
                    f"the manifest has no sample weight column {weight_column!r} (it has: {sorted(table.columns)})"
                )
            weights = table[weight_column].astype(float).tolist()
        return cls(
            base,
            table["study_id"].tolist(),
            table["report"].tolist(),
            seed,
            skip_empty_reports,
            weights,
            videos_per_study,
            views,
        )

    @property
    def skipped(self) -> list[Any]:
        return getattr(self.base, "skipped", [])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        if self.videos_per_study is not None:
            return self._study(i)
        rows = self.groups[i]
        row = rows[sample_rng(self.seed, self.epoch, i).randrange(len(rows))] if len(rows) > 1 else rows[0]
        sample = self.base[row]
        if sample is None:
            return None
        return {**sample, "index": i}

    def _study(self, i: int) -> dict[str, Any] | None:
        rows = self.groups[i]
        k = min(self.videos_per_study or 1, len(rows))
        drawn = sorted(sample_rng(self.seed, self.epoch, i).sample(rows, k))
        samples, views = [], []
        for row in drawn:
            sample = self.base[row]
            if sample is not None:
                samples.append(sample)
                views.append(None if self.views is None else self.views[row])
        if not samples:
            return None
        out = {k: v for k, v in samples[0].items() if k not in ("video", "cm_per_px", "period")}
        out["videos"] = torch.stack([s["video"] for s in samples])
        if all("cm_per_px" in s for s in samples):
            out["cm_per_px"] = torch.stack([s["cm_per_px"] for s in samples])
        return {**out, "views": views, "index": i}
