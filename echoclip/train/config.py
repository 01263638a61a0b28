"""Settings of contrastive training: the loop's, plus the objective's own in one nested dataclass."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from echoclip.data.augment import AugmentConfig
from echoclip.errors import ConfigError
from echoclip.loop.config import LoopConfig, config_kwargs, load_recipe

__all__ = ["TRAIN_LEVELS", "ContrastiveConfig", "TrainConfig", "load_recipe"]


@dataclass(frozen=True)
class ContrastiveConfig:
    """What :class:`~echoclip.train.contrastive.ContrastiveObjective` does with a batch.

    In a recipe it is the ``[train.contrastive]`` table.
    """

    loss: Literal["clip", "siglip"] = "clip"
    # tokens per report and sentence (the text tower's context)
    context_length: int = 77
    sentence_dropout: float = 0.3
    shuffle_sentences: bool = False
    # weight of a second term in which each sentence of a batch's reports picks its videos
    # (see sentence_to_video_loss); 0 trains on whole reports only
    sentence_loss_weight: float = 0.0
    # the term's sentences per step: a random subset of the batch's distinct ones (0: all)
    max_sentences: int = 0
    # weight of a third term in which each video ranks copies of its report's numeric
    # sentences with the numbers shifted (see value_order_loss); 0 = off
    value_loss_weight: float = 0.0
    # the term's numeric sentences per step, each with value_variants shifted copies
    value_sentences: int = 32
    value_variants: int = 6
    # width, in grid steps (1 for integers, 0.1 for one-decimal values), of the soft
    # target over the shifted copies
    value_sigma: float = 3.0
    # weight of a term in which the same sentences pick, among the batch's reports, those
    # that hold them (see sentence_to_report_loss); 0 = off
    sentence_report_weight: float = 0.0
    # concept name -> regular expression (matched without case) of what reports state in
    # many phrasings, e.g. {"tavr": "\\btav[ri]\\b|transcatheter"}: a sentence naming a
    # concept is not a negative of the videos and reports that name it otherwise, and the
    # sentences naming one are taken first into max_sentences; empty = off
    concept_patterns: dict[str, str] = field(default_factory=dict)
    # the concepts whose sentences are taken first (None: all of them; [] none): a rare
    # concept needs it to be seen every step, a common one crowds out the other sentences
    first_concepts: list[str] | None = None
    # held-out studies embedded per forward pass during validation
    val_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.loss not in ("clip", "siglip"):
            raise ConfigError(f"unknown loss {self.loss!r}; known: ['clip', 'siglip']")
        if not 0.0 <= self.sentence_dropout < 1.0:
            raise ConfigError(f"sentence_dropout must be in [0, 1), got {self.sentence_dropout}")
        for name in ("sentence_loss_weight", "value_loss_weight", "sentence_report_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if self.max_sentences < 0:
            raise ConfigError(f"max_sentences must be >= 0 (0: all), got {self.max_sentences}")
        if self.value_sentences < 1 or self.value_variants < 1:
            raise ConfigError(
                f"value_sentences and value_variants must be at least 1, got {self.value_sentences}, "
                f"{self.value_variants}"
            )
        for name, pattern in self.concept_patterns.items():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ConfigError(
                    f"concept_patterns[{name!r}]: not a regular expression ({pattern!r}: {e})"
                ) from None

        unknown = sorted(set(self.first_concepts or ()) - set(self.concept_patterns))
        if unknown:
            raise ConfigError(f"first_concepts names {unknown}, which concept_patterns lacks")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **overrides: Any) -> ContrastiveConfig:
        """A copy with ``overrides`` applied; ``None`` values are ignored (unset CLI flags)."""
        return ContrastiveConfig.from_dict(
            {**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContrastiveConfig:
        return cls(**config_kwargs(cls, d, "contrastive options"))


TRAIN_LEVELS = ("clip", "study")


# the study pooling a model without one trains with at study level
DEFAULT_STUDY_POOLING = "attention"


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """A contrastive training run: the loop's settings, the data's, and the objective's (nested).

    ``level`` says what meets a report: one video of its study (``"clip"``), or the study
    embedding of up to ``videos_per_study`` of its videos (``"study"``; ``batch_size`` then
    counts studies, and a step puts up to ``batch_size * videos_per_study`` clips through
    the video tower in one batch).
    """

    skip_empty_reports: bool = True
    level: Literal["clip", "study"] = "clip"
    # study level: the most videos of a study drawn per step (without replacement)
    videos_per_study: int = 4
    # study level: the model's study pooling (a name in STUDY_POOLINGS); None keeps the
    # model's own, or DEFAULT_STUDY_POOLING for a model without one. Clip level leaves it unset.
    study_pooling: str | None = None
    # study level: the manifest column of each video's view; "auto" reads "view_pred" (a
    # classifier's views, as inference has them), else "view", else none; "none": unknown
    view_column: str = "auto"
    # a manifest column of per-study sampling weights (e.g. from mention_weights): an
    # epoch draws studies with replacement in proportion to them
    sample_weight_column: str | None = None
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    # the training clips' augmentation (the [train.augment] table)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.level not in TRAIN_LEVELS:
            raise ConfigError(f"unknown training level {self.level!r}; known: {list(TRAIN_LEVELS)}")
        if not (isinstance(self.videos_per_study, int) and self.videos_per_study >= 1):
            raise ConfigError(f"videos_per_study must be at least 1, got {self.videos_per_study!r}")
        if self.study_pooling is not None and self.level != "study":
            raise ConfigError(f"study_pooling {self.study_pooling!r} is trained only at level 'study'")
        if not (isinstance(self.view_column, str) and self.view_column):
            raise ConfigError(
                f"view_column must be a column name, 'auto' or 'none', got {self.view_column!r}"
            )
