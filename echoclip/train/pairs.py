"""Pairing reports with videos: one training item per study, not per video."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from echoclip.errors import DataError
from echoclip.train.contrastive import sample_rng


class StudyPairs(Dataset):
    """One item per study; each epoch pairs the study's report with one of its videos.

    A study often has several videos (views, repeated acquisitions) and one report.
    Treating each video as its own pair would put the same report twice in a batch
    as a false negative; drawing one video per study per epoch avoids that while
    every video is still used over the epochs. The draw depends only on
    ``(seed, epoch, study)``, so runs resume exactly.

    ``weights`` (one per video; a study takes the largest of its videos') become
    :attr:`sample_weights`, which the trainer draws studies by.
    """

    def __init__(
        self,
        base: Dataset,
        study_ids: Sequence[Any],
        reports: Sequence[Any] | None = None,
        seed: int = 0,
        skip_empty_reports: bool = True,
        weights: Sequence[float] | None = None,
    ) -> None:
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

    @classmethod
    def from_table_dataset(
        cls, base: Any, seed: int = 0, skip_empty_reports: bool = True, weight_column: str | None = None
    ) -> StudyPairs:
        """Build from a dataset with a ``table`` (a DataFrame with ``study_id`` and ``report``).

        ``weight_column`` names a column of sampling weights (see :attr:`sample_weights`).
        """
        table = base.table
        weights = None
        if weight_column is not None:
            if weight_column not in table.columns:
                raise DataError(
                    f"the manifest has no sample weight column {weight_column!r} (it has: {sorted(table.columns)})"
                )
            weights = table[weight_column].astype(float).tolist()
        return cls(
            base, table["study_id"].tolist(), table["report"].tolist(), seed, skip_empty_reports, weights
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
        rows = self.groups[i]
        row = rows[sample_rng(self.seed, self.epoch, i).randrange(len(rows))] if len(rows) > 1 else rows[0]
        sample = self.base[row]
        if sample is None:
            return None
        return {**sample, "index": i}
